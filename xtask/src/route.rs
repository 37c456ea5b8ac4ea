//! The interface of the default route: where `cargo xtask run` attaches the agent unless told
//! otherwise.

use anyhow::Context as _;

use crate::process::{command, probe};

/// The interface of the default route: IPv4 from `/proc/net/route`, else whatever
/// `ip -j route show default` (IPv4, then IPv6) names.
pub fn default_interface() -> anyhow::Result<String> {
    if let Some(iface) = std::fs::read_to_string("/proc/net/route")
        .ok()
        .and_then(|table| from_proc_net_route(&table))
    {
        return Ok(iface);
    }
    let routes: [&[&str]; 2] = [
        &["-j", "route", "show", "default"],
        &["-j", "-6", "route", "show", "default"],
    ];
    routes
        .iter()
        .find_map(|args| probe(command("ip").args(*args)).and_then(|json| from_ip_json(&json)))
        .context("this host has no default route: pass the interface yourself, e.g. `cargo xtask run -- --iface eth0`")
}

/// The interface of the usable default route in `/proc/net/route` text: destination and mask
/// `00000000`, the route up (flag `RTF_UP`, 0x1), the lowest metric when there are several.
pub fn from_proc_net_route(table: &str) -> Option<String> {
    const RTF_UP: u32 = 0x1;
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [
                iface,
                destination,
                _gateway,
                flags,
                _refcnt,
                _use,
                metric,
                mask,
                ..,
            ] = fields[..]
            else {
                return None;
            };
            let flags = u32::from_str_radix(flags, 16).ok()?;
            let is_default = destination == "00000000" && mask == "00000000";
            (is_default && flags & RTF_UP != 0)
                .then(|| (metric.parse::<u32>().unwrap_or(u32::MAX), iface))
        })
        .min_by_key(|&(metric, _)| metric)
        .map(|(_, iface)| iface.to_owned())
}

/// The device of the first route in `ip -j route show default` output.
pub fn from_ip_json(json: &str) -> Option<String> {
    let routes: serde_json::Value = serde_json::from_str(json).ok()?;
    routes
        .as_array()?
        .iter()
        .find_map(|route| route.get("dev")?.as_str().map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n";

    #[test]
    fn the_default_route_is_the_one_to_0_0_0_0_with_mask_0() {
        let table = format!(
            "{HEADER}\
             eth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
             eth0\t00000000\t0100A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n"
        );
        assert_eq!(from_proc_net_route(&table).as_deref(), Some("eth0"));
    }

    #[test]
    fn the_default_route_with_the_lowest_metric_wins() {
        let table = format!(
            "{HEADER}\
             wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n\
             enp3s0\t00000000\t0100A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n"
        );
        assert_eq!(from_proc_net_route(&table).as_deref(), Some("enp3s0"));
    }

    #[test]
    fn a_route_that_is_down_or_not_default_is_not_the_default_route() {
        let table = format!(
            "{HEADER}\
             eth1\t00000000\t0100A8C0\t0002\t0\t0\t0\t00000000\t0\t0\t0\n\
             eth0\t0000000A\t00000000\t0001\t0\t0\t0\t000000FF\t0\t0\t0\n"
        );
        assert_eq!(from_proc_net_route(&table), None);
        assert_eq!(from_proc_net_route(HEADER), None);
        assert_eq!(from_proc_net_route(""), None);
    }

    #[test]
    fn ip_json_names_the_device_of_the_default_route() {
        let json = r#"[{"dst":"default","gateway":"192.168.0.1","dev":"eth0","protocol":"dhcp","flags":[]}]"#;
        assert_eq!(from_ip_json(json).as_deref(), Some("eth0"));
        assert_eq!(from_ip_json("[]"), None);
        assert_eq!(from_ip_json("not json"), None);
    }
}
