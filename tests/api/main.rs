//! The one integration-test binary: every module drives the real server over HTTP on port 0
//! with a fresh temporary data directory.

mod access;
mod auth;
mod backup;
mod cache;
mod cluster;
mod crash;
mod errors;
mod etags;
mod events;
mod fuzz;
mod helpers;
mod history;
mod integrity;
mod jobs;
mod limits;
mod limits_redis;
mod limits_redis_outage;
mod markets;
mod messages;
mod metrics;
mod paging;
mod postgres;
mod protocol;
mod restart;
mod search;
mod seed;
mod sessions;
mod spec;
mod startup;
mod tour;
mod trading;
mod webhooks;
