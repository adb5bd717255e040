//! Evaluating one policy for one (binding, param): its match conditions, then its validations
//! and audit annotations, as upstream's `validator.Validate`. Variables are evaluated lazily,
//! at most once each: an expression gets only the `variables.NAME` it mentions, so a variable
//! that fails only fails the expressions that use it (upstream's composition library).

use std::cell::RefCell;
use std::collections::HashMap;

use serde_json::Value;

use super::policy::{Expression, Policy};

/// The inputs of every expression, as CEL values.
#[derive(Clone)]
pub struct Inputs {
    pub object: Value,
    pub old_object: Value,
    pub request: Value,
    pub params: Value,
    pub namespace_object: Value,
}

/// What a validation decided.
#[derive(Debug, PartialEq)]
pub enum Decision {
    Admit,
    /// The expression was false: message and status reason.
    Deny {
        message: String,
        reason: String,
    },
    /// The expression (or a variable it uses) could not be evaluated.
    Error(String),
}

/// An audit annotation's outcome.
#[derive(Debug, PartialEq)]
pub enum Annotation {
    Publish(String, String),
    Exclude,
    Error(String),
}

pub struct Result {
    /// `None`: the match conditions excluded the request.
    pub decisions: Option<Vec<Decision>>,
    pub annotations: Vec<Annotation>,
}

/// upstream's `MaxEvaluatedMessageExpressionSizeBytes`.
const MAX_MESSAGE: usize = 5 * 1024;

fn cel_value(v: &Value) -> cel::Value {
    cel::to_value(v).unwrap_or(cel::Value::Null)
}

struct Evaluator<'a> {
    policy: &'a Policy,
    base: cel::Context<'static, 'static>,
    /// Each variable's value once computed.
    variables: RefCell<Vec<Option<std::result::Result<cel::Value, String>>>>,
}

/// The `variables.NAME` an expression mentions.
fn mentioned(e: &cel::parser::Expression, out: &mut Vec<String>) {
    use cel::common::ast::{EntryExpr, Expr};
    match &e.expr {
        Expr::Select(s) => {
            if let Expr::Ident(id) = &s.operand.expr
                && id == "variables"
            {
                out.push(s.field.clone());
            }
            mentioned(&s.operand, out);
        }
        Expr::Call(c) => {
            for t in c.target.iter() {
                mentioned(t, out);
            }
            for a in &c.args {
                mentioned(a, out);
            }
        }
        Expr::Comprehension(c) => {
            for x in [
                &c.iter_range,
                &c.accu_init,
                &c.loop_cond,
                &c.loop_step,
                &c.result,
            ] {
                mentioned(x, out);
            }
        }
        Expr::List(l) => l.elements.iter().for_each(|x| mentioned(x, out)),
        Expr::Map(m) => m.entries.iter().for_each(|entry| match &entry.expr {
            EntryExpr::MapEntry(m) => {
                mentioned(&m.key, out);
                mentioned(&m.value, out);
            }
            EntryExpr::StructField(f) => mentioned(&f.value, out),
        }),
        Expr::Struct(s) => s.entries.iter().for_each(|entry| {
            if let EntryExpr::StructField(f) = &entry.expr {
                mentioned(&f.value, out);
            }
        }),
        Expr::Unspecified | Expr::Ident(_) | Expr::Literal(_) => {}
    }
}

impl<'a> Evaluator<'a> {
    fn new(policy: &'a Policy, inputs: &Inputs, authorizer: Option<Authorizer>) -> Evaluator<'a> {
        let mut base = cel::Context::with_env(vkube_api::crd::rules::env());
        if let Some((authorizer, user)) = authorizer {
            super::authz::install(&mut base, authorizer, user);
            base.add_variable_from_value("authorizer", super::authz::root());
        }
        base.add_variable_from_value("object", cel_value(&inputs.object));
        base.add_variable_from_value("oldObject", cel_value(&inputs.old_object));
        base.add_variable_from_value("request", cel_value(&inputs.request));
        base.add_variable_from_value("params", cel_value(&inputs.params));
        base.add_variable_from_value("namespaceObject", cel_value(&inputs.namespace_object));
        Evaluator {
            policy,
            base,
            variables: RefCell::new(vec![None; policy.variables.len()]),
        }
    }

    /// Evaluates `e` with the variables it mentions among the first `visible` ones. The error is
    /// upstream's wording: `compilation error: …`, or `expression '…' resulted in error: …`.
    fn run(&self, e: &Expression, visible: usize) -> std::result::Result<cel::Value, String> {
        let program = e
            .program
            .as_ref()
            .map_err(|why| format!("compilation error: {why}"))?;
        self.exec(program, visible)
            .map_err(|why| format!("expression '{}' resulted in error: {why}", e.text))
    }

    fn exec(
        &self,
        program: &cel::Program,
        visible: usize,
    ) -> std::result::Result<cel::Value, String> {
        let mut names = Vec::new();
        mentioned(program.expression(), &mut names);
        let mut values = HashMap::new();
        for name in names {
            let Some(i) = self.policy.variables[..visible]
                .iter()
                .position(|v| v.name == name)
            else {
                continue;
            };
            values.insert(name, self.variable(i)?);
        }
        let mut ctx = self.base.new_inner_scope();
        ctx.add_variable_from_value("variables", values);
        let run = || program.execute(&ctx).map_err(|err| err.to_string());
        if vkube_api::crd::compile::deep(program) {
            vkube_api::crd::compile::on_large_stack(run)
        } else {
            run()
        }
    }

    /// Variable `i`, computed once (it sees only the variables before it, as upstream compiles
    /// them in order), with upstream's composition errors.
    fn variable(&self, i: usize) -> std::result::Result<cel::Value, String> {
        if let Some(done) = &self.variables.borrow()[i] {
            return done.clone();
        }
        let v = &self.policy.variables[i];
        let value = match &v.expression.program {
            Err(why) => Err(format!(
                "composited variable {:?} fails to compile: {why}",
                v.name
            )),
            Ok(program) => self.exec(program, i).map_err(|why| {
                format!("composited variable {:?} fails to evaluate: {why}", v.name)
            }),
        };
        self.variables.borrow_mut()[i] = Some(value.clone());
        value
    }

    /// matchConditions: false when one is false; an error when none is false but one failed.
    fn conditions(&self) -> std::result::Result<bool, String> {
        let mut errors = Vec::new();
        for (name, e) in &self.policy.conditions {
            match self.run(e, self.policy.variables.len()) {
                Ok(cel::Value::Bool(true)) => {}
                Ok(cel::Value::Bool(false)) => return Ok(false),
                Ok(other) => errors.push(format!(
                    "matchCondition {name:?} resulted in a non-boolean value: {other:?}"
                )),
                Err(why) => errors.push(why),
            }
        }
        if errors.is_empty() {
            Ok(true)
        } else {
            Err(errors.join(", "))
        }
    }

    fn message(&self, v: &super::policy::Validation) -> String {
        let from_expression = v.message_expression.as_ref().and_then(|e| {
            match self.run(e, self.policy.variables.len()) {
                Ok(cel::Value::String(s)) => {
                    let s = s.trim();
                    (s.len() <= MAX_MESSAGE && !s.contains('\n')).then(|| s.to_string())
                }
                _ => None,
            }
        });
        from_expression
            .filter(|m| !m.is_empty())
            .or_else(|| Some(v.message.trim().to_string()).filter(|m| !m.is_empty()))
            .unwrap_or_else(|| format!("failed expression: {}", v.expression.text.trim()))
    }
}

/// The RBAC view and the requesting user, for `authorizer`.
pub type Authorizer = (
    std::sync::Arc<crate::authz::Authorizer>,
    vkube_auth::UserInfo,
);

/// Evaluates `policy` over `inputs`; `authorizer` only when the policy uses it.
pub fn evaluate(policy: &Policy, inputs: &Inputs, authorizer: Option<Authorizer>) -> Result {
    let ev = Evaluator::new(policy, inputs, authorizer);
    let all = policy.variables.len();
    match ev.conditions() {
        Ok(true) => {}
        Ok(false) => {
            return Result {
                decisions: None,
                annotations: Vec::new(),
            };
        }
        Err(why) => {
            return Result {
                decisions: Some(vec![Decision::Error(why)]),
                annotations: Vec::new(),
            };
        }
    }
    let decisions = policy
        .validations
        .iter()
        .map(|v| match ev.run(&v.expression, all) {
            Err(why) => Decision::Error(why),
            Ok(cel::Value::Bool(true)) => Decision::Admit,
            Ok(_) => Decision::Deny {
                message: ev.message(v),
                reason: v.reason.clone(),
            },
        })
        .collect();
    let annotations = policy
        .audit_annotations
        .iter()
        .map(|a| match ev.run(&a.value, all) {
            Err(why) => Annotation::Error(why),
            Ok(cel::Value::String(s)) if s.trim().is_empty() => Annotation::Exclude,
            Ok(cel::Value::String(s)) => Annotation::Publish(a.key.clone(), s.trim().to_string()),
            Ok(cel::Value::Null) => Annotation::Exclude,
            Ok(other) => Annotation::Error(format!(
                "valueExpression '{}' resulted in unsupported return type: {}. Return type must be either string or null.",
                a.value.text,
                type_name(&other)
            )),
        })
        .collect();
    Result {
        decisions: Some(decisions),
        annotations,
    }
}

/// cel-go's type names, as its errors print them.
fn type_name(v: &cel::Value) -> &'static str {
    match v {
        cel::Value::Int(_) => "int",
        cel::Value::UInt(_) => "uint",
        cel::Value::Float(_) => "double",
        cel::Value::Bool(_) => "bool",
        cel::Value::String(_) => "string",
        cel::Value::Bytes(_) => "bytes",
        cel::Value::List(_) => "list",
        cel::Value::Map(_) => "map",
        cel::Value::Null => "null_type",
        _ => "unknown",
    }
}
