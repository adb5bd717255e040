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

/// Like [`to_json`], keeping the last of duplicate keys, and saying where the first duplicate
/// is in upstream's words (`line 9: key "foo" already set in map`), for `fieldValidation`.
pub fn to_json_lenient(text: &str) -> Result<(Value, Option<String>), String> {
    match to_json(text) {
        Ok(v) => Ok((v, None)),
        Err(err) => {
            let Some(duplicate) = duplicate_key(&err) else {
                return Err(err);
            };
            let options = serde_saphyr::options! {
                strict_booleans: true,
                duplicate_keys: serde_saphyr::options::DuplicateKeyPolicy::LastWins,
            };
            let v =
                serde_saphyr::from_str_with_options(text, options).map_err(|e| e.to_string())?;
            Ok((v, Some(duplicate)))
        }
    }
}

/// serde-saphyr's `line 9 column 3: duplicate mapping key: foo, …` as go-yaml words it.
fn duplicate_key(err: &str) -> Option<String> {
    let at = err.find("duplicate mapping key: ")?;
    let key = err[at + "duplicate mapping key: ".len()..]
        .split(|c: char| c == ',' || c.is_whitespace())
        .next()?;
    let line = err[..at]
        .rsplit_once("line ")
        .and_then(|(_, rest)| rest.split_whitespace().next())?;
    Some(format!("line {line}: key {key:?} already set in map"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn duplicate_keys_are_named_as_go_yaml_names_them() {
        let (v, dup) = to_json_lenient("\nspec:\n  foo: 1\n  foo: 2\n").unwrap();
        assert_eq!(v, json!({"spec": {"foo": 2}}));
        assert_eq!(
            dup.as_deref(),
            Some("line 4: key \"foo\" already set in map")
        );
    }

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
