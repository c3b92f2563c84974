//! STUB until the policy module lands.
use std::borrow::Cow;
use std::path::{Path, PathBuf};
#[derive(Clone, Copy, Debug, PartialEq, Eq)] pub enum GroupAttribute { O, Ou, OuElseO }
#[derive(Clone, Copy, Debug, PartialEq, Eq)] pub enum Mode { Enforce, Audit }
pub enum Principal<'a> { Anonymous, Certificate { user: Option<&'a str>, organizations: &'a [String], org_units: &'a [String] } }
pub struct Policy { files: Vec<PathBuf> }
pub enum Decision<'p> { Allow { permission: &'p str }, Deny(Denial<'p>) }
pub enum Denial<'p> { NotCovered, Requires(Vec<&'p str>) }
impl Denial<'_> { pub fn reason(&self, method: &str, path: &str) -> String { format!("{method} {path} is covered by no permission") } }
#[derive(Debug, Default)]
pub struct Explanation { pub groups: Vec<String>, pub user: Option<String>, pub held: Vec<String>, pub held_from: Vec<(String, String)>, pub covering: Vec<String>, pub covering_routes: Vec<(String, String)>, pub allowed: bool, pub permission: Option<String>, pub rule: String }
#[derive(Debug, thiserror::Error)] #[error("policy error")] pub struct PolicyError;
#[derive(Debug, Clone, PartialEq, Eq)] pub struct PathError;
impl PathError { pub fn reason(&self) -> &'static str { "invalid path" } }
pub fn normalize_path(p: &str) -> Result<Cow<'_, str>, PathError> { Ok(Cow::Borrowed(p)) }
impl Policy {
    pub fn load(path: &Path) -> Result<Policy, PolicyError> { Ok(Policy { files: vec![path.to_path_buf()] }) }
    pub fn files(&self) -> &[PathBuf] { &self.files }
    pub fn sha256_hex(&self) -> &str { "" }
    pub fn mode(&self) -> Mode { Mode::Enforce }
    pub fn group_attribute(&self) -> GroupAttribute { GroupAttribute::O }
    pub fn groups_of<'a>(&self, _p: &Principal<'a>) -> Vec<&'a str> { vec![] }
    pub fn decide(&self, _p: &Principal<'_>, _m: &str, _path: &str) -> Decision<'_> { Decision::Deny(Denial::NotCovered) }
    pub fn explain(&self, _p: &Principal<'_>, _m: &str, _path: &str) -> Explanation { Explanation::default() }
    pub fn permission_count(&self) -> usize { 0 }
    pub fn group_count(&self) -> usize { 0 }
    pub fn user_count(&self) -> usize { 0 }
    pub fn route_count(&self) -> usize { 0 }
}
