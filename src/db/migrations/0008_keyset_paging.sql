-- Keyset (cursor) paging reads each list in the order of an index. The position lists sort
-- in mixed directions, so their indexes say so: a market's positions largest stake first,
-- then by staker and outcome; a user's positions most recently changed first.

CREATE INDEX positions_market_amount ON positions (market_id, amount DESC, user_id, outcome);
CREATE INDEX positions_user_updated  ON positions (user_id, updated_at DESC, market_id DESC, outcome);
