use serde_json::json;

use super::*;

#[test]
fn delete_options_choose_the_finalizers() {
    let q = HashMap::new();
    let parse = |v: Value| Policy::parse(&v, &q);
    let obj = json!({"metadata": {"finalizers": ["x"]}});
    let fg = parse(json!({"propagationPolicy": "Foreground"})).unwrap();
    assert_eq!(
        deletion_finalizers(&obj, &fg),
        Some(vec!["x".into(), FOREGROUND.into()])
    );
    let orphan = parse(json!({"orphanDependents": true})).unwrap();
    assert_eq!(
        deletion_finalizers(&obj, &orphan),
        Some(vec!["x".into(), ORPHAN.into()])
    );
    let bg = parse(json!({"propagationPolicy": "Background"})).unwrap();
    assert_eq!(deletion_finalizers(&obj, &bg), None);
    // Without options, a finalizer already there decides; a new policy replaces it.
    let marked = json!({"metadata": {"finalizers": [ORPHAN]}});
    assert_eq!(deletion_finalizers(&marked, &Policy::default()), None);
    assert_eq!(deletion_finalizers(&marked, &bg), Some(vec![]));
    let both = parse(json!({"propagationPolicy": "Orphan", "orphanDependents": false}));
    assert_eq!(both.unwrap_err().code, 422);
    assert_eq!(
        parse(json!({"propagationPolicy": "Sideways"}))
            .unwrap_err()
            .code,
        422
    );
    let from_query = HashMap::from([("propagationPolicy".to_string(), "Orphan".to_string())]);
    assert_eq!(
        Policy::parse(&json!({}), &from_query).unwrap(),
        Policy::explicit(Propagation::Orphan)
    );
}
