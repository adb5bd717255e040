//! CEL expressions of the AuthenticationConfiguration (claim mappings and validation rules), over
//! `claims` (the token's payload) or `user` (the mapped user), with the cel crate.

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

/// A compiled expression; compared and printed by its source.
#[derive(Clone)]
pub struct Expr {
    pub source: String,
    program: Arc<cel::Program>,
}

impl fmt::Debug for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Expr({:?})", self.source)
    }
}

impl PartialEq for Expr {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

/// The standard library with optionals (`claims.?x.orValue(…)`), shared by every expression.
fn env() -> Arc<cel::Env> {
    static ENV: std::sync::OnceLock<Arc<cel::Env>> = std::sync::OnceLock::new();
    ENV.get_or_init(|| Arc::new(cel::Env::stdlib())).clone()
}

impl Expr {
    pub fn compile(source: &str) -> Result<Expr, String> {
        let program = env()
            .compile(source)
            .map_err(|e| format!("compilation failed: {e}"))?;
        Ok(Expr {
            source: source.to_string(),
            program: Arc::new(program),
        })
    }

    /// Whether the expression mentions `variable.field` (e.g. `claims.email`).
    pub fn mentions(&self, field: &str) -> bool {
        // The parser keeps no spans we can rely on for this; the source text is exact enough
        // for the one rule that needs it (claims.email needs claims.email_verified).
        // `claims.?x` (optional selection) mentions `claims.x` too.
        let s = &self.source.replace(".?", ".");
        let mut from = 0;
        while let Some(i) = s[from..].find(field) {
            let end = from + i + field.len();
            let next = s[end..].chars().next();
            if !next.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                return true;
            }
            from = end;
        }
        false
    }

    /// Evaluates with one variable bound to a JSON value; the result as JSON.
    pub fn eval(&self, variable: &str, value: &Value) -> Result<Value, String> {
        let mut ctx = cel::Context::with_env(env());
        let bound = cel::to_value(value).map_err(|e| e.to_string())?;
        ctx.add_variable_from_value(variable, bound);
        let result = self.program.execute(&ctx).map_err(|e| e.to_string())?;
        result
            .json()
            .map_err(|e| format!("the result cannot be used: {e:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn claims_maps_optionals_and_errors() {
        let claims = json!({"sub": "a", "groups": ["x", "y"], "nested": {"team": "t"}});
        let eval = |src: &str| Expr::compile(src).unwrap().eval("claims", &claims);
        assert_eq!(eval("claims.sub + ':x'").unwrap(), json!("a:x"));
        assert_eq!(
            eval("claims.groups.map(g, 'g:' + g)").unwrap(),
            json!(["g:x", "g:y"])
        );
        assert_eq!(eval("claims.nested.team").unwrap(), json!("t"));
        assert_eq!(eval("has(claims.email)").unwrap(), json!(false));
        assert_eq!(
            eval("claims.?email_verified.orValue(true) == true").unwrap(),
            json!(true)
        );
        assert!(eval("claims.email").is_err(), "a missing key is an error");
        assert!(Expr::compile("claims.(").is_err());
        let e = Expr::compile("claims.email == 'a' && claims.email_verified").unwrap();
        assert!(e.mentions("claims.email") && e.mentions("claims.email_verified"));
        assert!(
            !Expr::compile("claims.email_verified")
                .unwrap()
                .mentions("claims.email")
        );
    }
}
