//! `dog`: the sheepfs administration command line (`dog <noun> <verb>`, as in Sheepdog).
//!
//! It sends one request to the daemon's admin socket, prints the reply as a table or as JSON,
//! and exits with a code that tells scripts what happened (see `dog --help`).

// A binary's root looks for modules beside it; these live in `dog/`.
#[path = "dog/check.rs"]
mod check;
#[path = "dog/cli.rs"]
mod cli;
#[path = "dog/exit.rs"]
mod exit;
#[path = "dog/render.rs"]
mod render;
#[path = "dog/tree.rs"]
mod tree;

use anyhow::{bail, Context};
use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};
use cli::{Cli, Format, Plan, UsageError, View};
use serde::Serialize;
use sheep_admin::{Client, Reply, Request};
use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if let Some(usage) = err.downcast_ref::<UsageError>() {
                Cli::command().error(ErrorKind::InvalidValue, usage).exit();
            }
            let (code, message) = exit::describe(&err, &cli.socket);
            eprintln!("dog: {message}");
            ExitCode::from(code)
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    let plan = cli.command.plan()?;
    let mut client = Client::connect(&cli.socket)?;
    match plan {
        Plan::Call(request, view) => {
            let reply = client.call(&request)?;
            let text = show(view, reply)?;
            print(&text)
        }
        Plan::NodeInfo(format) => {
            let view = node_view(&mut client)?;
            print(&either(format, &view, || view.render())?)
        }
        Plan::Check { vdi, args } => {
            let mut progress = check::Progress::stderr();
            let summary = check::run(&mut client, vdi, !args.no_repair, &mut progress)?;
            let text = either(Format { json: args.json }, &summary, || {
                check::render(&summary)
            })?;
            print(&text)?;
            summary.verdict()
        }
    }
}

/// Asks for the node, then for its memory; a daemon that does not know the second request
/// (older than this `dog`) refuses it, and the node is shown without it.
fn node_view(client: &mut Client) -> anyhow::Result<render::NodeView> {
    let node = match client.call(&Request::NodeInfo)? {
        Reply::NodeInfo(n) => n,
        reply => bail!(
            "sheepfs sent an unexpected reply ({}); are dog and sheepfs the same version?",
            reply_name(&reply)
        ),
    };
    let memory = match client.call(&Request::NodeMemory) {
        Ok(Reply::Memory(m)) => Some(m),
        Ok(_) | Err(sheep_admin::Error::Remote(_)) => None,
        Err(e) => return Err(e.into()),
    };
    Ok(render::NodeView { node, memory })
}

/// Renders `reply` as `view` asks.
fn show(view: View, reply: Reply) -> anyhow::Result<String> {
    match (view, reply) {
        (View::Quiet, Reply::Done) => Ok(String::new()),
        (View::List(f), Reply::VdiList(vdis)) => either(f, &vdis, || render::vdi_table(&vdis)),
        (View::Tree(f), Reply::VdiList(vdis)) => {
            let roots = tree::build(&vdis);
            either(f, &roots, || tree::render(&roots))
        }
        (View::Cluster(f), Reply::ClusterInfo(c)) => either(f, &c, || render::cluster_info(&c)),
        (View::NodeList(f), Reply::ClusterInfo(c)) => {
            either(f, &c.members, || render::node_list(&c.members))
        }
        (View::Forced(f), Reply::Forced(r)) => either(f, &r, || render::forced(&r)),
        (View::Recovery(f), Reply::Recovery(r)) => either(f, &r, || render::recovery(&r)),
        (View::Throttle, Reply::Recovery(r)) => Ok(render::throttle(r.throttle)),
        (_, reply) => bail!(
            "sheepfs sent an unexpected reply ({}); are dog and sheepfs the same version?",
            reply_name(&reply)
        ),
    }
}

/// JSON of `value` with `--json`, otherwise the human text.
fn either<T: Serialize + ?Sized>(
    format: Format,
    value: &T,
    human: impl FnOnce() -> String,
) -> anyhow::Result<String> {
    if format.json {
        let mut json = serde_json::to_string_pretty(value).context("cannot encode JSON")?;
        json.push('\n');
        Ok(json)
    } else {
        Ok(human())
    }
}

fn reply_name(reply: &Reply) -> &'static str {
    match reply {
        Reply::Done => "Done",
        Reply::VdiList(_) => "VdiList",
        Reply::NodeInfo(_) => "NodeInfo",
        Reply::ClusterInfo(_) => "ClusterInfo",
        Reply::Forced(_) => "Forced",
        Reply::Recovery(_) => "Recovery",
        Reply::Check(_) => "Check",
        Reply::Memory(_) => "Memory",
    }
}

/// Writes to stdout; a closed pipe (`dog vdi list | head`) is not an error.
fn print(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write to stdout")
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_that_does_not_fit_the_command_is_an_error() {
        let err = show(View::Quiet, Reply::VdiList(vec![])).unwrap_err();
        assert!(err.to_string().contains("same version"));
    }

    #[test]
    fn quiet_commands_print_nothing() {
        assert_eq!(show(View::Quiet, Reply::Done).unwrap(), "");
    }

    #[test]
    fn json_listings_are_arrays() {
        let text = show(View::List(Format { json: true }), Reply::VdiList(vec![])).unwrap();
        assert_eq!(text, "[]\n");
    }
}
