//! Slurm's compressed notations: tasks per node (`4(x2),3`) and host lists
//! (`node[01-04,07]`). Pure string parsing, no Slurm library.

/// `SLURM_TASKS_PER_NODE`-style list: per node, in node order, how many tasks run there.
/// `"4(x2),3"` is nodes 0 and 1 with 4 tasks and node 2 with 3. Stored run-length
/// encoded, because the repeat count can be the node count of a large cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TasksPerNode {
    /// (tasks on each node of the run, number of nodes in the run), both at least 1.
    runs: Vec<(usize, usize)>,
}

impl TasksPerNode {
    /// Parses `N` or `N(xM)` items separated by commas. The error is a phrase to put
    /// after the variable's name.
    pub(crate) fn parse(spec: &str) -> Result<Self, String> {
        let spec = spec.trim();
        if spec.is_empty() {
            return Err("is empty".into());
        }
        let mut runs = Vec::new();
        for item in spec.split(',') {
            let item = item.trim();
            let (count, repeat) = match item.find('(') {
                None => (item, "1"),
                Some(open) => {
                    let rest = &item[open + 1..];
                    let inner = rest
                        .strip_prefix('x')
                        .and_then(|r| r.strip_suffix(')'))
                        .ok_or_else(|| format!("has '{item}', which is not N or N(xM)"))?;
                    (&item[..open], inner)
                }
            };
            let count = parse_positive(count)
                .ok_or_else(|| format!("has '{item}', which is not N or N(xM)"))?;
            let repeat = parse_positive(repeat)
                .ok_or_else(|| format!("has '{item}', which is not N or N(xM)"))?;
            runs.push((count, repeat));
        }
        Ok(Self { runs })
    }

    /// Tasks on node `node` (0-based, `SLURM_NODEID`), or `None` past the last node.
    pub(crate) fn on_node(&self, node: usize) -> Option<usize> {
        let mut first = 0usize;
        for &(count, repeat) in &self.runs {
            if node < first.saturating_add(repeat) {
                return Some(count);
            }
            first = first.saturating_add(repeat);
        }
        None
    }

    /// The task count when every node has the same one.
    pub(crate) fn uniform(&self) -> Option<usize> {
        let first = self.runs.first()?.0;
        self.runs
            .iter()
            .all(|&(count, _)| count == first)
            .then_some(first)
    }
}

fn parse_positive(s: &str) -> Option<usize> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<usize>().ok().filter(|&n| n > 0)
}

/// The first host of a Slurm host list, for the simple forms only: `node07`,
/// `node07,node09`, `node[07-09]`, `node[3,5-7]`, `gpu[01-04]-ib`,
/// `a[1-2],b[3-4]`. Zero padding is kept (`node[001-004]` gives `node001`). A first
/// host with more than one bracketed range (`rack[1-2]-node[1-4]`) is refused rather
/// than guessed. The error is a phrase to put after the variable's name.
pub(crate) fn first_host(list: &str) -> Result<String, String> {
    let list = list.trim();
    // The first element ends at the first comma outside brackets.
    let mut depth = 0i32;
    let mut end = list.len();
    for (i, c) in list.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            ',' if depth == 0 => {
                end = i;
                break;
            }
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return Err(format!("'{list}' has unbalanced or nested brackets"));
        }
    }
    let first = &list[..end];
    if first.is_empty() {
        return Err("is empty".into());
    }
    let host = match first.find('[') {
        None => first.to_string(),
        Some(open) => {
            let close = first[open..]
                .find(']')
                .map(|c| open + c)
                .ok_or_else(|| format!("'{first}' has an unclosed '['"))?;
            let (prefix, inner, suffix) =
                (&first[..open], &first[open + 1..close], &first[close + 1..]);
            if suffix.contains('[') {
                return Err(format!(
                    "'{first}' has more than one bracketed range, which solbench does not expand"
                ));
            }
            let first_item = inner.split(',').next().unwrap_or("");
            let low = first_item.split('-').next().unwrap_or("").trim();
            if low.is_empty() || !low.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("'{first}' has a range that is not numeric"));
            }
            format!("{prefix}{low}{suffix}")
        }
    };
    let valid = host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    if !valid {
        return Err(format!("gives '{host}', which is not a host name"));
    }
    Ok(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_per_node_runs_expand_by_node() {
        let t = TasksPerNode::parse("4(x2),3").unwrap();
        assert_eq!(t.on_node(0), Some(4));
        assert_eq!(t.on_node(1), Some(4));
        assert_eq!(t.on_node(2), Some(3));
        assert_eq!(t.on_node(3), None);
        assert_eq!(t.uniform(), None);

        let t = TasksPerNode::parse("8").unwrap();
        assert_eq!(t.on_node(0), Some(8));
        assert_eq!(t.uniform(), Some(8));

        let t = TasksPerNode::parse(" 2(x3) , 2 ").unwrap();
        assert_eq!(t.uniform(), Some(2));
        assert_eq!(t.on_node(3), Some(2));

        // A huge repeat count is not expanded.
        let t = TasksPerNode::parse("1(x1000000000)").unwrap();
        assert_eq!(t.on_node(999_999_999), Some(1));
    }

    #[test]
    fn tasks_per_node_rejects_malformed_items() {
        for bad in [
            "", "x", "4(2)", "4(x)", "4(x2", "0", "4(x0)", "-1", "4,,2", "4(y2)",
        ] {
            assert!(
                TasksPerNode::parse(bad).is_err(),
                "{bad:?} should not parse"
            );
        }
    }

    #[test]
    fn first_host_of_simple_lists() {
        let cases = [
            ("node07", "node07"),
            ("node07,node09", "node07"),
            ("node[07-09]", "node07"),
            ("node[001-004]", "node001"),
            ("node[3,5-7]", "node3"),
            ("gpu[01-04]-ib", "gpu01-ib"),
            ("a[1-2],b[3-4]", "a1"),
            ("dgx-h100-[12-15],dgx-h100-20", "dgx-h100-12"),
            ("host.example.org", "host.example.org"),
            (" node1 ", "node1"),
        ];
        for (list, want) in cases {
            assert_eq!(first_host(list).as_deref(), Ok(want), "{list}");
        }
    }

    #[test]
    fn first_host_refuses_what_it_would_have_to_guess() {
        for bad in [
            "",
            "rack[1-2]-node[1-4]",
            "node[a-c]",
            "node[",
            "node[[1-2]]",
            "node]1[",
            "no de1",
            "node[]",
        ] {
            assert!(first_host(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
