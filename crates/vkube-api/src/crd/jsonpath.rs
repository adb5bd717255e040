//! placeholder: replaced by the JSONPath module
use serde_json::Value;

pub fn eval(_path: &str, _obj: &Value) -> Result<Vec<Value>, String> {
    Ok(Vec::new())
}
