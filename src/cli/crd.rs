use std::process::ExitCode;

/// Print every CRD as one multi-document YAML stream (`kubectl apply -f -` ready).
pub fn run() -> anyhow::Result<ExitCode> {
    print!("{}", crate::api::crd::all_yaml()?);
    Ok(ExitCode::SUCCESS)
}
