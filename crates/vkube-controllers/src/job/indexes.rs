//! Completion indexes as upstream writes them in `completedIndexes` and `failedIndexes`:
//! ordered, merged intervals, `1,3-5,7`.

/// Ordered, non-overlapping, non-adjacent intervals of indexes (inclusive).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Intervals(Vec<(i32, i32)>);

impl Intervals {
    /// Parses `1,3-5`, dropping what is at or past `completions` and what does not parse (as
    /// upstream does with a corrupted value).
    pub(crate) fn parse(text: &str, completions: i32) -> Self {
        let mut out = Intervals::default();
        for part in text.split(',').filter(|p| !p.is_empty()) {
            let (first, last) = match part.split_once('-') {
                Some((a, b)) => (a.parse::<i32>(), b.parse::<i32>()),
                None => (part.parse::<i32>(), part.parse::<i32>()),
            };
            let (Ok(first), Ok(last)) = (first, last) else {
                continue;
            };
            if first >= completions {
                break;
            }
            out.push((first, last.min(completions - 1)));
        }
        out
    }

    fn push(&mut self, (first, last): (i32, i32)) {
        match self.0.last_mut() {
            Some(prev) if first <= prev.1 + 1 => prev.1 = prev.1.max(last),
            _ => self.0.push((first, last)),
        }
    }

    /// These intervals and `other`'s.
    pub(crate) fn merge(&self, other: &Intervals) -> Intervals {
        let mut all: Vec<(i32, i32)> = self.0.iter().chain(other.0.iter()).copied().collect();
        all.sort();
        let mut out = Intervals::default();
        for iv in all {
            out.push(iv);
        }
        out
    }

    /// These intervals and the given indexes.
    pub(crate) fn with(&self, indexes: impl IntoIterator<Item = i32>) -> Intervals {
        let mut add = Intervals::default();
        let mut indexes: Vec<i32> = indexes.into_iter().collect();
        indexes.sort_unstable();
        for ix in indexes {
            add.push((ix, ix));
        }
        self.merge(&add)
    }

    pub(crate) fn has(&self, ix: i32) -> bool {
        self.0.iter().any(|&(a, b)| a <= ix && ix <= b)
    }

    pub(crate) fn total(&self) -> i32 {
        self.0.iter().map(|&(a, b)| b - a + 1).sum()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (i32, i32)> + '_ {
        self.0.iter().copied()
    }
}

impl std::fmt::Display for Intervals {
    /// Upstream's spelling: two adjacent indexes are `1,2`, three or more `1-3`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, &(a, b)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{a}")?;
            if b == a + 1 {
                write!(f, ",{b}")?;
            } else if b > a {
                write!(f, "-{b}")?;
            }
        }
        Ok(())
    }
}

/// The first `count` indexes below `completions` that `taken` does not cover.
pub(crate) fn first_pending(taken: &Intervals, count: usize, completions: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut candidate = 0;
    for (first, last) in taken.iter() {
        while candidate < completions && out.len() < count && candidate < first {
            out.push(candidate);
            candidate += 1;
        }
        candidate = candidate.max(last + 1);
    }
    while candidate < completions && out.len() < count {
        out.push(candidate);
        candidate += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_merge_and_spell_as_upstream() {
        let iv = Intervals::parse("0,2-4,9", 8);
        assert_eq!(iv.to_string(), "0,2-4");
        assert_eq!(iv.total(), 4);
        let more = iv.with([1, 5, 7]);
        assert_eq!(more.to_string(), "0-5,7");
        assert!(more.has(7) && !more.has(6));
        assert_eq!(Intervals::default().with([3, 4]).to_string(), "3,4");
        assert_eq!(first_pending(&more, 3, 10), vec![6, 8, 9]);
        assert_eq!(first_pending(&Intervals::default(), 2, 1), vec![0]);
    }
}
