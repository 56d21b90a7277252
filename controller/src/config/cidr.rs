//! IP ranges (CIDRs): the destinations of an `Allowlist` run and the ranges the controller
//! forbids among them (`--forbidden-egress-cidrs`, `--cluster-cidrs`). Pure.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// A CIDR such as `203.0.113.0/24` or `2001:db8::/32`; host bits are ignored when comparing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    bits: u8,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let invalid = || format!("{text:?} is not a CIDR such as 203.0.113.0/24 or 2001:db8::/32");
        let (addr, bits) = text.trim().split_once('/').ok_or_else(invalid)?;
        let addr: IpAddr = addr.parse().map_err(|_| invalid())?;
        let bits: u8 = bits.parse().map_err(|_| invalid())?;
        if bits > width(&addr) {
            return Err(invalid());
        }
        Ok(Cidr { addr, bits })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.bits)
    }
}

fn width(addr: &IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

fn value(addr: &IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(*a)),
        IpAddr::V6(a) => u128::from(*a),
    }
}

impl Cidr {
    /// The network part of the address (host bits cleared).
    fn network(&self) -> u128 {
        let host_bits = u32::from(width(&self.addr) - self.bits);
        value(&self.addr) & u128::MAX.checked_shl(host_bits).unwrap_or(0)
    }

    /// Whether every address of `other` is in this range (same address family).
    pub fn contains(&self, other: &Cidr) -> bool {
        self.addr.is_ipv4() == other.addr.is_ipv4()
            && self.bits <= other.bits
            && Cidr {
                addr: other.addr,
                bits: self.bits,
            }
            .network()
                == self.network()
    }
}

/// What an allowlist entry `entry` may reach given the `forbidden` ranges: `Err(range)` when
/// the entry lies within a forbidden range (nothing of it may be reached), else the forbidden
/// ranges inside it, to be excepted from it.
pub fn carve(entry: &Cidr, forbidden: &[Cidr]) -> Result<Vec<Cidr>, Cidr> {
    if let Some(range) = forbidden.iter().find(|f| f.contains(entry)) {
        return Err(*range);
    }
    Ok(forbidden
        .iter()
        .filter(|f| entry.contains(f))
        .copied()
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(text: &str) -> Cidr {
        text.parse().expect("cidr")
    }

    #[test]
    fn parses_both_families_and_rejects_the_rest() {
        assert_eq!(cidr("10.0.0.1/8").to_string(), "10.0.0.1/8");
        assert_eq!(cidr("fd00:ec2::254/128").to_string(), "fd00:ec2::254/128");
        for bad in ["10.0.0.0", "10.0.0.0/33", "::/129", "host/8", "10.0.0.0/-1"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn containment_follows_the_prefix_and_the_family() {
        let link_local = cidr("169.254.0.0/16");
        assert!(link_local.contains(&cidr("169.254.169.254/32")));
        assert!(link_local.contains(&link_local));
        assert!(!link_local.contains(&cidr("169.255.0.0/32")));
        assert!(!link_local.contains(&cidr("169.0.0.0/8")));
        assert!(cidr("0.0.0.0/0").contains(&link_local));
        assert!(!cidr("::/0").contains(&link_local), "another family");
        assert!(cidr("fd00:ec2::/32").contains(&cidr("fd00:ec2::254/128")));
    }

    #[test]
    fn an_entry_inside_a_forbidden_range_is_refused_and_one_around_it_excepts_it() {
        let forbidden = [cidr("169.254.0.0/16"), cidr("10.96.0.0/12")];
        assert_eq!(
            carve(&cidr("169.254.169.254/32"), &forbidden),
            Err(forbidden[0])
        );
        assert_eq!(
            carve(&cidr("0.0.0.0/0"), &forbidden),
            Ok(forbidden.to_vec())
        );
        assert_eq!(carve(&cidr("203.0.113.0/24"), &forbidden), Ok(vec![]));
    }
}
