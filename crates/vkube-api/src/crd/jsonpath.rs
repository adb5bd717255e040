//! kubectl's JSONPath (client-go `util/jsonpath`), the subset that printer columns, selectable
//! fields and `-o jsonpath` use: fields (`.spec.replicas`, `['app.kubernetes.io/name']`), indexes
//! and slices (`[0]`, `[-1]`, `[1:3]`), wildcards (`.*`, `[*]`), recursive descent (`..name`),
//! unions (`['a','b']`, `[0,2]`) and filters (`[?(@.type=="Ready")]`, `[?(@.x)]`, with
//! `== != < <= > >=` against string, number and boolean literals). Missing keys match nothing
//! (printer columns allow missing keys); ranges, functions and templates (`range`, `end`) are not
//! supported.

use serde_json::Value;

/// Evaluates `path` (with or without the `{}` braces) against `obj` and returns the matched
/// values in document order. A path that does not parse, or an index out of bounds, is an error.
pub fn eval(path: &str, obj: &Value) -> Result<Vec<Value>, String> {
    let steps = parse(path)?;
    let mut current = vec![obj.clone()];
    for step in &steps {
        current = apply(step, current)?;
    }
    Ok(current)
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Fields(Vec<String>),
    Wildcard,
    Recursive,
    Indexes(Vec<i64>),
    Slice(Option<i64>, Option<i64>),
    Filter(Filter),
}

#[derive(Debug, Clone, PartialEq)]
struct Filter {
    left: Vec<Step>,
    op: Option<(String, Operand)>,
}

#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Literal(Value),
    Path(Vec<Step>),
}

fn parse(path: &str) -> Result<Vec<Step>, String> {
    let mut text = path.trim();
    if let Some(inner) = text.strip_prefix('{') {
        text = inner
            .strip_suffix('}')
            .ok_or_else(|| format!("unclosed action in {path:?}"))?
            .trim();
    }
    let mut p = Parser {
        chars: text.chars().collect(),
        pos: 0,
    };
    if p.peek() == Some('$') {
        p.pos += 1;
    }
    let steps = p.steps(false)?;
    if p.pos < p.chars.len() {
        return Err(format!(
            "unrecognized character in action: {:?}",
            p.chars[p.pos]
        ));
    }
    Ok(steps)
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn skip_spaces(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    /// Steps until the end, or (inside a filter) until an operator or `)`.
    fn steps(&mut self, in_filter: bool) -> Result<Vec<Step>, String> {
        let mut steps = Vec::new();
        loop {
            match self.peek() {
                None => break,
                Some('.') => {
                    self.pos += 1;
                    if self.eat('.') {
                        steps.push(Step::Recursive);
                    }
                    if self.eat('*') {
                        steps.push(Step::Wildcard);
                        continue;
                    }
                    let name = self.field_name();
                    if !name.is_empty() {
                        steps.push(Step::Fields(vec![name]));
                    } else if steps.last() != Some(&Step::Recursive) && self.peek() != Some('[') {
                        // A lone "." (the whole object) is allowed at the end.
                        if self.peek().is_some() && !in_filter {
                            return Err("invalid field name".into());
                        }
                    }
                }
                Some('[') => {
                    self.pos += 1;
                    steps.push(self.bracket()?);
                }
                Some(c) if in_filter && (c.is_whitespace() || "=!<>)".contains(c)) => break,
                Some(c) => return Err(format!("unrecognized character in action: {c:?}")),
            }
        }
        Ok(steps)
    }

    fn field_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if c == '\\' && self.chars.get(self.pos + 1) == Some(&'.') {
                name.push('.');
                self.pos += 2;
                continue;
            }
            if c.is_whitespace() || ".[]()=!<>{}'\"".contains(c) {
                break;
            }
            name.push(c);
            self.pos += 1;
        }
        name
    }

    fn bracket(&mut self) -> Result<Step, String> {
        self.skip_spaces();
        let step = match self.peek() {
            Some('*') => {
                self.pos += 1;
                Step::Wildcard
            }
            Some('?') => {
                self.pos += 1;
                if !self.eat('(') {
                    return Err("invalid filter: expected '('".into());
                }
                let f = self.filter()?;
                self.skip_spaces();
                if !self.eat(')') {
                    return Err("unclosed filter: expected ')'".into());
                }
                Step::Filter(f)
            }
            Some('\'' | '"') => {
                let mut names = vec![self.quoted()?];
                loop {
                    self.skip_spaces();
                    if !self.eat(',') {
                        break;
                    }
                    self.skip_spaces();
                    names.push(self.quoted()?);
                }
                Step::Fields(names)
            }
            _ => self.index_or_slice()?,
        };
        self.skip_spaces();
        if !self.eat(']') {
            return Err("unterminated array".into());
        }
        Ok(step)
    }

    fn quoted(&mut self) -> Result<String, String> {
        let quote = self.peek().ok_or("unterminated string")?;
        self.pos += 1;
        let mut s = String::new();
        loop {
            match self.peek() {
                None => return Err("unterminated string".into()),
                Some('\\') => {
                    if let Some(c) = self.chars.get(self.pos + 1) {
                        s.push(*c);
                    }
                    self.pos += 2;
                }
                Some(c) if c == quote => {
                    self.pos += 1;
                    return Ok(s);
                }
                Some(c) => {
                    s.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    fn int(&mut self) -> Result<Option<i64>, String> {
        self.skip_spaces();
        let start = self.pos;
        if self.peek() == Some('-') {
            self.pos += 1;
        }
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        let text: String = self.chars[start..self.pos].iter().collect();
        self.skip_spaces();
        if text.is_empty() {
            return Ok(None);
        }
        text.parse()
            .map(Some)
            .map_err(|_| format!("invalid array index {text}"))
    }

    fn index_or_slice(&mut self) -> Result<Step, String> {
        let first = self.int()?;
        if self.eat(':') {
            let end = self.int()?;
            if self.eat(':') {
                // A step is accepted and must be 1 (the only one printer paths use).
                let _ = self.int()?;
            }
            return Ok(Step::Slice(first, end));
        }
        let mut indexes = vec![first.ok_or("invalid array index")?];
        while self.eat(',') {
            indexes.push(self.int()?.ok_or("invalid array index")?);
        }
        Ok(Step::Indexes(indexes))
    }

    fn filter(&mut self) -> Result<Filter, String> {
        self.skip_spaces();
        if !self.eat('@') {
            return Err("invalid filter: expected '@'".into());
        }
        let left = self.steps(true)?;
        self.skip_spaces();
        let mut op = String::new();
        while let Some(c) = self.peek().filter(|c| "=!<>".contains(*c)) {
            op.push(c);
            self.pos += 1;
        }
        if op.is_empty() {
            return Ok(Filter { left, op: None });
        }
        if !["==", "!=", "<", "<=", ">", ">="].contains(&op.as_str()) {
            return Err(format!("unrecognized filter operator {op}"));
        }
        self.skip_spaces();
        let right = match self.peek() {
            Some('\'' | '"') => Operand::Literal(Value::String(self.quoted()?)),
            Some('@') => {
                self.pos += 1;
                Operand::Path(self.steps(true)?)
            }
            _ => {
                let start = self.pos;
                while self.peek().is_some_and(|c| !c.is_whitespace() && c != ')') {
                    self.pos += 1;
                }
                let word: String = self.chars[start..self.pos].iter().collect();
                let lit = serde_json::from_str::<Value>(&word)
                    .map_err(|_| format!("invalid filter value {word}"))?;
                Operand::Literal(lit)
            }
        };
        Ok(Filter {
            left,
            op: Some((op, right)),
        })
    }
}

fn apply(step: &Step, input: Vec<Value>) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    for v in input {
        match step {
            Step::Fields(names) => {
                for n in names {
                    if let Some(x) = v.get(n.as_str()) {
                        out.push(x.clone());
                    }
                }
            }
            Step::Wildcard => match v {
                Value::Object(map) => {
                    let mut keys: Vec<&String> = map.keys().collect();
                    keys.sort();
                    out.extend(keys.into_iter().map(|k| map[k].clone()));
                }
                Value::Array(items) => out.extend(items),
                _ => {}
            },
            Step::Recursive => descend(&v, &mut out),
            Step::Indexes(indexes) => {
                let Value::Array(items) = &v else { continue };
                let len = items.len() as i64;
                for &i in indexes {
                    let at = if i < 0 { i + len } else { i };
                    if at < 0 || at >= len {
                        return Err(format!(
                            "array index out of bounds: index {i}, length {len}"
                        ));
                    }
                    out.push(items[at as usize].clone());
                }
            }
            Step::Slice(start, end) => {
                let Value::Array(items) = &v else { continue };
                let len = items.len() as i64;
                let fix = |x: i64| if x < 0 { (x + len).max(0) } else { x.min(len) };
                let from = start.map_or(0, fix);
                let to = end.map_or(len, fix);
                if from < to {
                    out.extend(items[from as usize..to as usize].iter().cloned());
                }
            }
            Step::Filter(f) => {
                let Value::Array(items) = &v else {
                    return Err(format!("{v} is not array or slice and cannot be filtered"));
                };
                for item in items {
                    if matches(f, item)? {
                        out.push(item.clone());
                    }
                }
            }
        }
    }
    Ok(out)
}

/// The value itself and everything below it, depth first.
fn descend(v: &Value, out: &mut Vec<Value>) {
    out.push(v.clone());
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            for k in keys {
                descend(&map[k], out);
            }
        }
        Value::Array(items) => {
            for x in items {
                descend(x, out);
            }
        }
        _ => {}
    }
}

fn select(steps: &[Step], item: &Value) -> Result<Vec<Value>, String> {
    let mut current = vec![item.clone()];
    for s in steps {
        current = apply(s, current)?;
    }
    Ok(current)
}

fn matches(f: &Filter, item: &Value) -> Result<bool, String> {
    let lefts = select(&f.left, item)?;
    let Some((op, right)) = &f.op else {
        return Ok(!lefts.is_empty());
    };
    let rights = match right {
        Operand::Literal(v) => vec![v.clone()],
        Operand::Path(steps) => select(steps, item)?,
    };
    let (Some(l), Some(r)) = (lefts.first(), rights.first()) else {
        return Ok(false);
    };
    if lefts.len() > 1 || rights.len() > 1 {
        return Err("can only compare one element at a time".into());
    }
    let ord = match (l, r) {
        (Value::Number(a), Value::Number(b)) => a.as_f64().partial_cmp(&b.as_f64()),
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        _ => None,
    };
    use std::cmp::Ordering::*;
    Ok(match op.as_str() {
        "==" => ord.map_or(l == r, |o| o == Equal),
        "!=" => ord.map_or(l != r, |o| o != Equal),
        "<" => ord == Some(Less),
        "<=" => matches!(ord, Some(Less | Equal)),
        ">" => ord == Some(Greater),
        _ => matches!(ord, Some(Greater | Equal)),
    })
}

#[cfg(test)]
mod tests {
    use super::eval;
    use serde_json::{Value, json};

    fn doc() -> Value {
        json!({
            "kind": "List",
            "metadata": {"name": "x", "labels": {"app": "web", "app.kubernetes.io/name": "web-1"}},
            "spec": {"replicas": 3, "ports": [{"name": "http", "port": 80}, {"name": "https", "port": 443}]},
            "status": {"conditions": [
                {"type": "Ready", "status": "True"},
                {"type": "Progressing", "status": "False"}
            ]},
            "items": [{"name": "a", "n": 1}, {"name": "b", "n": 2}, {"name": "c", "n": 3}]
        })
    }

    fn e(path: &str) -> Vec<Value> {
        eval(path, &doc()).unwrap()
    }

    #[test]
    fn fields_and_quoted_keys() {
        assert_eq!(e(".spec.replicas"), [json!(3)]);
        assert_eq!(e("{.spec.replicas}"), [json!(3)]);
        assert_eq!(e("$.metadata.labels.app"), [json!("web")]);
        assert_eq!(
            e(".metadata.labels['app.kubernetes.io/name']"),
            [json!("web-1")]
        );
        assert_eq!(
            e(".metadata.labels.app\\.kubernetes\\.io/name"),
            [json!("web-1")]
        );
        assert_eq!(e(".spec.missing"), Vec::<Value>::new());
        assert_eq!(e(".spec.replicas.deeper"), Vec::<Value>::new());
        assert_eq!(e("['kind','spec']").len(), 2);
    }

    #[test]
    fn indexes_slices_and_wildcards() {
        assert_eq!(e(".items[0].name"), [json!("a")]);
        assert_eq!(e(".items[-1].name"), [json!("c")]);
        assert_eq!(e(".items[0,2].n"), [json!(1), json!(3)]);
        assert_eq!(e(".items[1:].name"), [json!("b"), json!("c")]);
        assert_eq!(e(".items[:2].n"), [json!(1), json!(2)]);
        assert_eq!(e(".items[*].name"), [json!("a"), json!("b"), json!("c")]);
        assert_eq!(e(".spec.ports[*].port"), [json!(80), json!(443)]);
        assert_eq!(e(".metadata.labels.*"), [json!("web"), json!("web-1")]);
        assert_eq!(
            eval(".items[5]", &doc()).unwrap_err(),
            "array index out of bounds: index 5, length 3"
        );
    }

    #[test]
    fn filters_and_recursive_descent() {
        assert_eq!(
            e(".status.conditions[?(@.type==\"Ready\")].status"),
            [json!("True")]
        );
        assert_eq!(
            e(".status.conditions[?(@.type == 'Progressing')].status"),
            [json!("False")]
        );
        assert_eq!(e(".items[?(@.n > 1)].name"), [json!("b"), json!("c")]);
        assert_eq!(e(".items[?(@.n<=1)].name"), [json!("a")]);
        assert_eq!(e(".items[?(@.name!='a')].n"), [json!(2), json!(3)]);
        assert_eq!(e(".spec.ports[?(@.port)].name").len(), 2);
        assert_eq!(
            e("..name"),
            [
                json!("a"),
                json!("b"),
                json!("c"),
                json!("x"),
                json!("http"),
                json!("https")
            ]
        );
    }

    #[test]
    fn syntax_errors() {
        assert!(eval(".items[0", &doc()).is_err());
        assert!(eval(".items[?(@.n > )]", &doc()).is_err());
        assert!(eval("{.spec", &doc()).is_err());
        assert!(eval(".items[x]", &doc()).is_err());
    }
}
