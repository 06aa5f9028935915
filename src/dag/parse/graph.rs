//! The task graph: unknown dependencies, cycles (with their path) and the size limits,
//! without recursion over the user's graph.

use std::collections::{BTreeSet, HashMap};
use std::ops::Range;

use super::*;

/// A cycle through `start` within `members`, following edges from a task to the tasks
/// that depend on it; the path starts and ends at `start` (`a -> b -> c -> a`).
pub(crate) fn cycle_path(
    start: usize,
    members: &BTreeSet<usize>,
    tasks: &[Task],
    ids: &[&str],
) -> Vec<usize> {
    // Edges inside the component, from a task to the tasks that depend on it.
    let index: HashMap<&str, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let mut downs: HashMap<usize, Vec<usize>> = HashMap::new();
    for &j in members {
        for d in &tasks[j].depends_on {
            if let Some(&i) = index.get(d.as_str())
                && members.contains(&i)
            {
                downs.entry(i).or_default().push(j);
            }
        }
    }
    // Breadth-first search with parent links: the path is rebuilt once at the end.
    let mut parent: HashMap<usize, usize> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(node) = queue.pop_front() {
        for &next in downs.get(&node).map_or(&[][..], Vec::as_slice) {
            if next == start {
                let mut path = vec![start, node];
                let mut at = node;
                while at != start {
                    at = parent[&at];
                    path.push(at);
                }
                path.reverse();
                return path;
            }
            if next != start && !parent.contains_key(&next) {
                parent.insert(next, node);
                queue.push_back(next);
            }
        }
    }
    vec![start, start]
}

impl Parser<'_, '_> {
    /// Checks dependencies and returns a topological order, reporting unknown tasks,
    /// self-dependencies and every cycle with its full path.
    pub(crate) fn graph(
        &mut self,
        tasks: &[Task],
        deps: &[Vec<Spanned<String>>],
        spans: &[Range<usize>],
    ) -> Option<Vec<usize>> {
        let ids: Vec<&str> = tasks.iter().map(|t| t.task_id.as_str()).collect();
        let index: HashMap<&str, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        let mut g: DiGraph<usize, ()> = DiGraph::new();
        let nodes: Vec<_> = (0..tasks.len()).map(|i| g.add_node(i)).collect();
        let mut ok = true;
        for (i, task) in tasks.iter().enumerate() {
            let mut seen = BTreeSet::new();
            for d in &deps[i] {
                let name = d.get_ref().as_str();
                if !seen.insert(name) {
                    self.err(
                        d.span(),
                        Some(&task.task_id),
                        format!("depends_on lists \"{name}\" twice"),
                    );
                    continue;
                }
                if name == task.task_id {
                    self.err(d.span(), Some(&task.task_id), "task depends on itself");
                    ok = false;
                    continue;
                }
                match index.get(name).copied() {
                    Some(j) => {
                        g.add_edge(nodes[j], nodes[i], ());
                    }
                    None => {
                        let hint =
                            did_you_mean(name, ids.iter().copied().filter(|x| *x != task.task_id));
                        self.err(
                            d.span(),
                            Some(&task.task_id),
                            format!("depends on unknown task \"{name}\"{hint}"),
                        );
                        ok = false;
                    }
                }
            }
        }
        // Kosaraju's algorithm is iterative in petgraph (Tarjan's recurses once per
        // task and overflows the stack on long chains).
        for scc in petgraph::algo::kosaraju_scc(&g) {
            if scc.len() < 2 {
                continue;
            }
            let members: BTreeSet<usize> = scc.iter().map(|n| g[*n]).collect();
            let first = *members.iter().next()?;
            let path = cycle_path(first, &members, tasks, &ids);
            let names: Vec<&str> = path.iter().map(|i| ids[*i]).collect();
            // Point at the depends_on entry of the first task that closes the cycle.
            let prev = ids[path[path.len().saturating_sub(2)]];
            let span = deps[first]
                .iter()
                .find(|d| d.get_ref() == prev)
                .map_or(spans[first].clone(), |d| d.span());
            self.err(
                span,
                Some(ids[first]),
                format!("dependency cycle: {}", names.join(" -> ")),
            );
            ok = false;
        }
        if !ok {
            return None;
        }
        petgraph::algo::toposort(&g, None)
            .ok()
            .map(|order| order.into_iter().map(|n| g[n]).collect())
    }
}

#[cfg(test)]
mod tests {
    use crate::dag::ValidationContext;
    use crate::dag::bundle::Bundle;

    fn errors(src: &str) -> Vec<String> {
        let b = Bundle::of_toml(src);
        let (r, wants) = super::super::parse_bundle(
            "g.toml",
            std::path::Path::new("g.toml"),
            &b,
            &ValidationContext::default(),
        );
        assert!(wants.is_empty());
        r.err()
            .unwrap_or_default()
            .into_iter()
            .map(|d| d.message)
            .collect()
    }

    #[test]
    fn cycles_name_their_path_and_unknown_dependencies_suggest() {
        let cyc = "[tasks.a]\nkind = \"noop\"\ndepends_on = [\"c\"]\n[tasks.b]\nkind = \"noop\"\ndepends_on = [\"a\"]\n[tasks.c]\nkind = \"noop\"\ndepends_on = [\"b\"]\n";
        let e = errors(cyc);
        assert!(
            e.iter().any(|m| m == "dependency cycle: a -> b -> c -> a"),
            "{e:?}"
        );
        let unknown =
            "[tasks.load]\nkind = \"noop\"\n[tasks.b]\nkind = \"noop\"\ndepends_on = [\"laod\"]\n";
        let e = errors(unknown);
        assert!(
            e.iter()
                .any(|m| m.contains("\"laod\"") && m.contains("did you mean \"load\"")),
            "{e:?}"
        );
        assert!(errors("[tasks.a]\nkind = \"noop\"\n").is_empty());
    }
}
