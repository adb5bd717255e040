//! YAML request bodies as JSON. A body that is JSON (what kubectl sends even as
//! `application/apply-patch+yaml`) is read as JSON, exactly and fast; real YAML is read with
//! YAML 1.2's booleans only, so a value spelled `yes` or `on` meant for a string field stays one.
//! (Upstream reads YAML bodies as YAML 1.1, where an unquoted `y:` key becomes `"true"`; kubectl
//! does the same to the files it reads, before vkube sees them.)

use serde_json::Value;

pub fn to_json(text: &str) -> Result<Value, String> {
    if let Ok(v) = serde_json::from_str(text) {
        return Ok(v);
    }
    serde_saphyr::from_str_with_options(text, serde_saphyr::options! { strict_booleans: true })
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn yes_no_and_y_stay_strings() {
        assert_eq!(
            to_json("{\"data\":{\"y\":\"2\",\"n\":\"no\"}}").unwrap(),
            json!({"data": {"y": "2", "n": "no"}})
        );
        assert_eq!(
            to_json("data:\n  \"y\": \"2\"\n  on: yes\n  flag: true\n").unwrap(),
            json!({"data": {"y": "2", "on": "yes", "flag": true}})
        );
    }
}
