//! STUB until the PKI work lands.
use std::path::{Path, PathBuf};
pub fn init(_dir: &Path, _org: Option<&str>, _names: &[String]) -> anyhow::Result<()> { anyhow::bail!("pki not built yet") }
pub fn issue_client(_dir: &Path, _cn: &str, _orgs: &[String], _ou: Option<&str>, _days: u32, _out: Option<&str>) -> anyhow::Result<PathBuf> { anyhow::bail!("pki not built yet") }
pub fn revoke(_dir: &Path, _cert: &Path) -> anyhow::Result<()> { anyhow::bail!("pki not built yet") }
