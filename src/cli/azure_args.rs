//! Azure connection flags shared by the commands that reach Azure (`migrate`, `run`).

use anyhow::Context;

use crate::azure::{ArmClient, ClientConfig, CredentialConfig, CredentialKind, Endpoints};

#[derive(Debug, Clone, clap::Args)]
pub struct AzureEndpointArgs {
    /// ARM endpoint (also serves Resource Graph), e.g. `https://management.azure.com/`; point it
    /// at `ama-migrator simulator` to test (the "ARM / Resource Graph endpoint" it prints).
    #[arg(
        long,
        env = "AMA_MIGRATOR_ARM_ENDPOINT",
        default_value = "https://management.azure.com/"
    )]
    pub arm_endpoint: url::Url,
    /// Log Analytics query endpoint: the service root, with or without a trailing `/v1`
    /// (`https://api.loganalytics.io/` and `https://api.loganalytics.io/v1` are the same; paste
    /// what `ama-migrator simulator` prints, e.g. `http://127.0.0.1:8787/v1`).
    #[arg(
        long,
        env = "AMA_MIGRATOR_LOG_ANALYTICS_ENDPOINT",
        default_value = "https://api.loganalytics.io/"
    )]
    pub log_analytics_endpoint: url::Url,
}

impl AzureEndpointArgs {
    /// The ARM client for these endpoints, with the credential of `kind` read from the environment.
    pub fn client(&self, kind: &str) -> anyhow::Result<ArmClient> {
        let kind: CredentialKind = kind
            .parse()
            .context("AZURE_CREDENTIAL_KIND / --credential")?;
        let credential = CredentialConfig::from_env(kind, |k| std::env::var(k).ok())?;
        let endpoints = Endpoints {
            arm: self.arm_endpoint.clone(),
            log_analytics: self.log_analytics_endpoint.clone(),
        };
        ArmClient::new(ClientConfig::new(endpoints, credential))
            .context("cannot build the Azure client")
    }
}
