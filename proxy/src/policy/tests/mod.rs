//! The policy module's tests, by concern: decisions, explanations, load errors, files and
//! includes, the shipped policies, SAN and SPIFFE grants, properties. The helpers here are
//! theirs.

mod decide;
mod errors;
mod explain;
mod includes;
mod properties;
mod sans;
mod shipped;

use super::*;
use std::fs;

const CONTRACT_EXAMPLE: &str = r#"
permissions:                               # permission name -> the requests it covers
  list_vms:   ["GET /api/v1/vm"]
  start_vm:   ["POST /api/v1/vm"]
  view_logs:  ["GET /api/v1/logs/**"]
  get_status: ["GET|HEAD /api/v1/status"]
groups:                                    # certificate O= value -> permissions ("*" = all)
  DevOps: ["*"]
  MyOrgName: [list_vms, start_vm]
users:                                     # certificate CN= value -> permissions
  Jenkins: [list_vms]
authenticated: [get_status]                # held by every valid certificate
anonymous: []                              # held by requests without a valid certificate
group_attribute: O                         # O | OU | OU_else_O
mode: enforce                              # enforce | audit
"#;

fn policy(yaml: &str) -> Policy {
    match Policy::from_yaml(yaml, Path::new("test.yaml")) {
        Ok(p) => p,
        Err(e) => panic!("policy refused: {e}"),
    }
}

fn policy_err(yaml: &str) -> PolicyError {
    match Policy::from_yaml(yaml, Path::new("policies/x.yaml")) {
        Ok(_) => panic!("policy accepted:\n{yaml}"),
        Err(e) => e,
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

struct Cert {
    cn: Option<String>,
    o: Vec<String>,
    ou: Vec<String>,
}

impl Cert {
    fn new(cn: &str, o: &[&str]) -> Cert {
        Cert {
            cn: Some(cn.to_string()),
            o: strings(o),
            ou: Vec::new(),
        }
    }
    fn ou(mut self, ou: &[&str]) -> Cert {
        self.ou = strings(ou);
        self
    }
    fn p(&self) -> Principal<'_> {
        Principal::Certificate {
            user: self.cn.as_deref(),
            organizations: &self.o,
            org_units: &self.ou,
            sans: Default::default(),
        }
    }
}

fn allow(p: &Policy, who: &Principal<'_>, m: &str, path: &str) -> String {
    match p.decide(who, m, path) {
        Decision::Allow { permission } => permission.to_string(),
        Decision::Deny(d) => panic!("{m} {path} denied: {}", d.reason(m, path)),
    }
}

fn deny(p: &Policy, who: &Principal<'_>, m: &str, path: &str) -> String {
    match p.decide(who, m, path) {
        Decision::Allow { permission } => panic!("{m} {path} allowed by {permission}"),
        Decision::Deny(d) => d.reason(m, path),
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap_or_else(|e| panic!("{e}"));
    }
    fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    path
}

fn load(path: &Path) -> Policy {
    Policy::load(path).unwrap_or_else(|e| panic!("{e}"))
}

fn load_err(path: &Path) -> PolicyError {
    match Policy::load(path) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e,
    }
}
