//! Compiling one CEL expression of a CRD without letting its text take the process down.
//!
//! The cel crate's ANTLR parser recurses about ten frames per level of nesting (it stops at 96
//! levels), and its tree visitor one frame per operator of a chain (`1 + 1 + …`, which it does not
//! count). On a worker thread's 2 MiB stack, 20 nested parentheses overflowed it in a debug build
//! and a long enough chain does in any build: a stack overflow aborts the process, every
//! tenant's requests with it. So an expression is compiled on a thread of its own with a large
//! stack, after cel-go's size limit (100 000 code points), and a program whose tree is deeper than
//! cel-go's 250 levels is refused there. Evaluating a program recurses over its tree too (about
//! 35 KiB a level in a debug build): rules deeper than [`SHALLOW`] are evaluated on a thread with
//! a large stack as well ([`on_large_stack`]).

use super::rules::env;

/// cel-go's `ExpressionSizeCodePointLimit`.
pub const MAX_CODE_POINTS: usize = 100_000;
/// The deepest expression tree kept: cel-go's parser limit (`maxRecursionDepth`).
pub const MAX_DEPTH: usize = 250;
/// Programs up to this deep are evaluated on the caller's stack (a worker thread's 2 MiB).
pub const SHALLOW: usize = 16;
/// The compiling thread's stack: a chain of 50 000 operators (the size limit's worst case)
/// needs about 100 MiB in a debug build. Only the pages used are ever backed by memory.
const STACK: usize = 256 << 20;
/// The evaluating thread's stack, for programs deeper than [`SHALLOW`]: 250 levels need about
/// 9 MiB in a debug build.
const EVAL_STACK: usize = 32 << 20;

/// Whether evaluating `program` needs [`on_large_stack`].
pub fn deep(program: &cel::Program) -> bool {
    depth(program.expression()) > SHALLOW
}

/// Runs `work` on a thread with a stack large enough to evaluate any program [`program`] kept.
pub fn on_large_stack<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        match std::thread::Builder::new()
            .name("cel-evaluate".into())
            .stack_size(EVAL_STACK)
            .spawn_scoped(scope, work)
        {
            Ok(evaluating) => evaluating
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            Err(e) => panic!("no thread to evaluate CEL on: {e}"),
        }
    })
}

/// Compiles `source`, or says why not (the parser's message, or a limit).
pub fn program(source: &str) -> Result<cel::Program, String> {
    let size = source.chars().count();
    if size > MAX_CODE_POINTS {
        return Err(format!(
            "expression code point size exceeds limit: size: {size}, limit {MAX_CODE_POINTS}"
        ));
    }
    std::thread::scope(|scope| {
        let compiling = std::thread::Builder::new()
            .name("cel-compile".into())
            .stack_size(STACK)
            .spawn_scoped(scope, || {
                let program = env().compile(source).map_err(|e| e.to_string())?;
                let depth = depth(program.expression());
                if depth > MAX_DEPTH {
                    // Dropped here, on this stack.
                    drop(program);
                    return Err(format!(
                        "expression nested too deeply: {depth} levels, limit {MAX_DEPTH}"
                    ));
                }
                Ok(program)
            })
            .map_err(|e| format!("no thread to compile on: {e}"))?;
        compiling
            .join()
            .unwrap_or_else(|_| Err("the CEL compiler failed".to_string()))
    })
}

/// The depth of an expression tree (a literal is 1).
fn depth(e: &cel::parser::Expression) -> usize {
    use cel::common::ast::Expr;
    let deepest = |children: &mut dyn Iterator<Item = &cel::parser::Expression>| {
        children.map(depth).max().unwrap_or(0)
    };
    1 + match &e.expr {
        Expr::Call(call) => deepest(&mut call.target.iter().map(|t| &**t).chain(&call.args)),
        Expr::Comprehension(c) => deepest(
            &mut [
                &c.iter_range,
                &c.accu_init,
                &c.loop_cond,
                &c.loop_step,
                &c.result,
            ]
            .into_iter(),
        ),
        Expr::List(list) => deepest(&mut list.elements.iter()),
        Expr::Map(map) => entries(&map.entries),
        Expr::Struct(s) => entries(&s.entries),
        Expr::Select(select) => depth(&select.operand),
        Expr::Unspecified | Expr::Ident(_) | Expr::Literal(_) => 0,
    }
}

fn entries(entries: &[cel::common::ast::IdedEntryExpr]) -> usize {
    use cel::common::ast::EntryExpr;
    entries
        .iter()
        .map(|entry| match &entry.expr {
            EntryExpr::StructField(f) => depth(&f.value),
            EntryExpr::MapEntry(m) => depth(&m.key).max(depth(&m.value)),
        })
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_compile_with_their_depth_and_size_checked() {
        assert!(program("self.replicas > 0 && self.name.startsWith('a')").is_ok());
        // Deep nesting and long chains are refused, not recursed into on a small stack.
        for text in [
            format!("{}1{}", "(".repeat(5_000), ")".repeat(5_000)),
            format!("{}1{}", "[".repeat(200), "]".repeat(200)),
            vec!["1"; 20_000].join(" + "),
            format!("self{}", ".a".repeat(20_000)),
        ] {
            assert!(program(&text).is_err(), "{}", &text[..40]);
        }
        let long = vec!["1"; 50_001].join("+");
        assert_eq!(
            program(&long).unwrap_err(),
            "expression code point size exceeds limit: size: 100001, limit 100000"
        );
        let chain = vec!["1"; MAX_DEPTH + 1].join(" + ");
        assert_eq!(
            program(&chain).unwrap_err(),
            format!(
                "expression nested too deeply: {} levels, limit {MAX_DEPTH}",
                MAX_DEPTH + 1
            )
        );
        // As deep as allowed: compiles, and evaluates on a large stack from a 2 MiB one; the
        // shallow ones evaluate in place.
        let ok = vec!["1"; MAX_DEPTH].join(" + ");
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                let p = program(&ok).unwrap();
                assert!(deep(&p));
                let value = on_large_stack(|| {
                    p.execute(&cel::Context::with_env(env()))
                        .is_ok_and(|v| v == cel::Value::Int(MAX_DEPTH as i64))
                });
                assert!(value);
                let shallow = program(&vec!["1"; SHALLOW].join(" + ")).unwrap();
                assert!(!deep(&shallow));
                let value = shallow.execute(&cel::Context::with_env(env())).unwrap();
                assert_eq!(value, cel::Value::Int(SHALLOW as i64));
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
