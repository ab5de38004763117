//! `ama-migrator simulator`: run the Azure simulator standalone on a loopback address until ctrl-c.
use std::process::ExitCode;

use anyhow::Context;

use super::SimulatorArgs;
use crate::sim::{Scenario, Simulator};

pub fn run(args: SimulatorArgs) -> anyhow::Result<ExitCode> {
    let scenario = match &args.scenario {
        Some(path) => Scenario::from_file(path)?,
        None => Scenario::default(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let machines = scenario.machines + scenario.outside_subscription_machines + scenario.on_prem_computers;
        let sim = Simulator::start(scenario, &args.listen).await?;
        println!("Azure simulator listening on {}", sim.base_url());
        println!("  ARM / Resource Graph endpoint: {}", sim.base_url());
        println!("  Log Analytics endpoint:        {}/v1", sim.base_url());
        println!("  workspace resource id:         {}", sim.workspace_resource_id());
        println!("  workspace customer id:         {}", sim.workspace_customer_id());
        println!("  test workspace resource id:    {}", sim.test_workspace_resource_id());
        println!("  subscriptions (in scope):      {}", sim.subscriptions().join(", "));
        println!("  subscription (out of scope):   {}", sim.outside_subscription());
        println!("  machines and computers:        {machines}");
        println!("  control:                       {}/_sim/info, /_sim/ledger, /_sim/requests, /_sim/faults", sim.base_url());
        println!("press ctrl-c to stop");
        tokio::signal::ctrl_c().await.context("cannot wait for ctrl-c")?;
        sim.shutdown().await;
        Ok(ExitCode::SUCCESS)
    })
}
