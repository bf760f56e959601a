//! `dog vdi tree`: VDIs arranged by their `parent` vid.

use crate::render::format_time;
use serde::Serialize;
use sheep_admin::{format_size, VdiInfo};
use std::collections::{HashMap, HashSet};

/// One VDI and the VDIs snapshotted or cloned from it.
#[derive(Debug, Serialize)]
pub struct TreeNode<'a> {
    /// The VDI.
    #[serde(flatten)]
    pub vdi: &'a VdiInfo,
    /// Its children, oldest first.
    pub children: Vec<TreeNode<'a>>,
}

/// Arranges `vdis` into trees. A VDI whose parent is unknown is a root; every VDI appears
/// exactly once even if the parent links form a cycle.
pub fn build(vdis: &[VdiInfo]) -> Vec<TreeNode<'_>> {
    let mut order: Vec<&VdiInfo> = vdis.iter().collect();
    order.sort_by_key(|v| (v.created, v.vid));
    let known: HashSet<u32> = vdis.iter().map(|v| v.vid).collect();
    let mut children: HashMap<u32, Vec<&VdiInfo>> = HashMap::new();
    for v in &order {
        if let Some(p) = v.parent.filter(|p| known.contains(p) && *p != v.vid) {
            children.entry(p).or_default().push(v);
        }
    }
    let is_root = |v: &&&VdiInfo| v.parent.is_none_or(|p| !known.contains(&p) || p == v.vid);
    let mut seen = HashSet::new();
    let mut roots: Vec<TreeNode<'_>> = order
        .iter()
        .filter(is_root)
        .map(|v| grow(v, &children, &mut seen))
        .collect();
    // VDIs left over sit on a parent cycle: show each cycle from its oldest member.
    for v in &order {
        if !seen.contains(&v.vid) {
            roots.push(grow(v, &children, &mut seen));
        }
    }
    roots
}

fn grow<'a>(
    vdi: &'a VdiInfo,
    children: &HashMap<u32, Vec<&'a VdiInfo>>,
    seen: &mut HashSet<u32>,
) -> TreeNode<'a> {
    seen.insert(vdi.vid);
    let kids = children
        .get(&vdi.vid)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut node = TreeNode {
        vdi,
        children: Vec::new(),
    };
    for kid in kids {
        if !seen.contains(&kid.vid) {
            node.children.push(grow(kid, children, seen));
        }
    }
    node
}

/// Draws the trees with box-drawing branches, one VDI a line.
pub fn render(roots: &[TreeNode<'_>]) -> String {
    let mut out = String::new();
    for root in roots {
        out.push_str(&label(root.vdi));
        out.push('\n');
        draw_children(&root.children, "", &mut out);
    }
    out
}

fn draw_children(children: &[TreeNode<'_>], prefix: &str, out: &mut String) {
    for (i, child) in children.iter().enumerate() {
        let last = i + 1 == children.len();
        let (branch, next) = if last {
            ("└─ ", "   ")
        } else {
            ("├─ ", "│  ")
        };
        out.push_str(prefix);
        out.push_str(branch);
        out.push_str(&label(child.vdi));
        out.push('\n');
        draw_children(&child.children, &format!("{prefix}{next}"), out);
    }
}

fn label(v: &VdiInfo) -> String {
    let name = match &v.tag {
        Some(tag) => format!("{}@{tag}", v.name),
        None => v.name.clone(),
    };
    let kind = if v.snapshot { "snapshot" } else { "vdi" };
    let size = format_size(v.size);
    let created = format_time(v.created);
    format!("{name}  ({kind} {:06x}, {size}, {created})", v.vid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vdi(name: &str, tag: Option<&str>, vid: u32, parent: Option<u32>) -> VdiInfo {
        VdiInfo {
            name: name.into(),
            tag: tag.map(Into::into),
            vid,
            size: 1 << 30,
            used: 0,
            shared: 0,
            copies: 1,
            created: u64::from(vid),
            parent,
            snapshot: tag.is_some(),
        }
    }

    #[test]
    fn children_are_drawn_under_their_parent() {
        let vdis = [
            vdi("vm0", Some("base"), 1, None),
            vdi("vm0", None, 2, Some(1)),
            vdi("clone", None, 3, Some(1)),
            vdi("other", None, 4, None),
        ];
        let out = render(&build(&vdis));
        let names: Vec<&str> = out
            .lines()
            .map(|l| l.split("  (").next().unwrap())
            .collect();
        assert_eq!(names, ["vm0@base", "├─ vm0", "└─ clone", "other"]);
    }

    #[test]
    fn a_parent_cycle_still_shows_every_vdi_once() {
        let vdis = [vdi("a", None, 1, Some(2)), vdi("b", None, 2, Some(1))];
        let out = render(&build(&vdis));
        assert_eq!(out.lines().count(), 2);
    }

    #[test]
    fn the_json_tree_nests_children() {
        let vdis = [vdi("vm0", Some("t"), 1, None), vdi("vm0", None, 2, Some(1))];
        let json = serde_json::to_value(build(&vdis)).unwrap();
        assert_eq!(json[0]["tag"], "t");
        assert_eq!(json[0]["children"][0]["vid"], 2);
    }
}
