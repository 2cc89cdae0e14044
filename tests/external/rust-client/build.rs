//! Generates the agora client with progenitor into OUT_DIR/agora_client.rs.
//!
//! The spec is ../../../openapi/openapi.json (the repo's), or the file named by $AGORA_SPEC.
//! When progenitor refuses the spec (an error or a panic), the build fails with its message and
//! with the operations (as JSON pointers) that it also refuses when generated on their own.

use std::{
    env, fs,
    panic::{self, AssertUnwindSafe},
    path::PathBuf,
    sync::Mutex,
};

use serde_json::Value;

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// The last panic's message and location, recorded by a quiet panic hook.
static LAST_PANIC: Mutex<String> = Mutex::new(String::new());

fn main() {
    let path = env::var("AGORA_SPEC").unwrap_or_else(|_| "../../../openapi/openapi.json".into());
    println!("cargo:rerun-if-changed={path}");
    println!("cargo:rerun-if-env-changed=AGORA_SPEC");
    let text = fs::read(&path).unwrap_or_else(|e| fail(&format!("cannot read {path}: {e}")));
    let spec: Value =
        serde_json::from_slice(&text).unwrap_or_else(|e| fail(&format!("{path} is not JSON: {e}")));

    panic::set_hook(Box::new(|info| {
        *LAST_PANIC.lock().unwrap() = info.to_string()
    }));
    let code = generate(&spec).unwrap_or_else(|e| {
        let mut report = format!("progenitor cannot generate a client from {path}:\n  {e}\n");
        let culprits = refused_operations(&spec);
        if culprits.is_empty() {
            report += "no operation is refused on its own (look at components or combinations)\n";
        } else {
            report += "operations refused on their own:\n";
            for (pointer, e) in culprits {
                report += &format!("  {pointer}: {e}\n");
            }
        }
        fail(&report)
    });
    let _ = panic::take_hook();

    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("agora_client.rs");
    fs::write(&out, code).unwrap_or_else(|e| fail(&format!("cannot write {}: {e}", out.display())));
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1)
}

/// Runs progenitor on `spec`; a panic inside it becomes an error.
fn generate(spec: &Value) -> Result<String, String> {
    let spec: openapiv3::OpenAPI = serde_json::from_value(spec.clone())
        .map_err(|e| format!("not an OpenAPI 3.0 document (openapiv3): {e}"))?;
    let mut generator = progenitor::Generator::default();
    let tokens = panic::catch_unwind(AssertUnwindSafe(|| generator.generate_tokens(&spec)))
        .map_err(|_| LAST_PANIC.lock().unwrap().clone())?
        .map_err(|e| format!("error: {e}"))?;
    let file = syn::parse2(tokens).map_err(|e| format!("generated code does not parse: {e}"))?;
    Ok(prettyplease::unparse(&file))
}

/// Each operation that progenitor refuses in a copy of the spec holding only that operation.
fn refused_operations(spec: &Value) -> Vec<(String, String)> {
    let mut refused = Vec::new();
    let Some(paths) = spec["paths"].as_object() else {
        return refused;
    };
    for (path, item) in paths {
        for method in METHODS.iter().filter(|m| item.get(**m).is_some()) {
            let mut single = item.clone();
            let single_item = single.as_object_mut().unwrap();
            single_item.retain(|k, _| k == method || !METHODS.contains(&k.as_str()));
            let mut one = spec.clone();
            one["paths"] = Value::Object([(path.clone(), single)].into_iter().collect());
            if let Err(e) = generate(&one) {
                let pointer = path.replace('~', "~0").replace('/', "~1");
                refused.push((format!("/paths/{pointer}/{method}"), e));
            }
        }
    }
    refused
}
