//! Several addresses: which one a link tries, and in what order.
//!
//! A client can be given several server addresses: the nodes of one room,
//! or one server under several names (a host name that resolves to
//! several addresses counts as several). Each link goes *round* the list:
//!
//! * its first round starts at the first address, so the client connects
//!   to the first one that answers;
//! * after a lost connection, the next round starts at the address after
//!   the one it was on (wrapping), so that it moves on to the next node
//!   instead of knocking again at the one that just failed; that one is
//!   tried last;
//! * an address another link of the same client is on (or is trying) goes
//!   to the end of the round: the two links of a redundant client sit on
//!   two different nodes whenever two answer, and share one only when no
//!   other answers (they stay together until that connection is lost).
//!
//! A round tries each address once, one after the other, with no wait in
//! between: a dead first address costs one refused connect (at most
//! [`ClientConfig::connect_timeout`](super::ClientConfig::connect_timeout)),
//! never a backoff delay. The backoff ([`Reconnect`](super::Reconnect))
//! waits *between* rounds, and counts rounds: one round is one attempt.
//!
//! [`order`] is the rule, a pure function; [`Route`] keeps the addresses
//! and which one each link is on. Host names are resolved once, when the
//! client is made ([`resolve`]).

use parking_lot::Mutex;
use std::io::{self, ErrorKind};
use std::net::{SocketAddr, ToSocketAddrs};

/// The addresses, and which one each link is on.
pub(crate) struct Route {
    addrs: Vec<SocketAddr>,
    /// For each link, the index of the address it is connected to or
    /// trying right now (`None` between connections).
    on: Mutex<Vec<Option<usize>>>,
}

impl Route {
    /// The route of a client with `links` links over `addrs` (not empty).
    pub(crate) fn new(addrs: Vec<SocketAddr>, links: usize) -> Route {
        Route {
            addrs,
            on: Mutex::new(vec![None; links]),
        }
    }

    /// Every address, in the order given.
    pub(crate) fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Address number `index`.
    pub(crate) fn addr(&self, index: usize) -> SocketAddr {
        self.addrs[index]
    }

    /// The addresses `link` tries in its next round, in order; `after` is
    /// the address it was last on. Those the other links are on go last.
    pub(crate) fn round(&self, link: usize, after: Option<usize>) -> Vec<usize> {
        let on = self.on.lock();
        let taken: Vec<usize> = on
            .iter()
            .enumerate()
            .filter(|&(other, _)| other != link)
            .filter_map(|(_, &at)| at)
            .collect();
        order(self.addrs.len(), after, &taken)
    }

    /// `link` is trying, then on, address `index`; `None`: on none.
    pub(crate) fn set(&self, link: usize, index: Option<usize>) {
        self.on.lock()[link] = index;
    }

    /// The address `link` is on, if any.
    pub(crate) fn addr_of(&self, link: usize) -> Option<SocketAddr> {
        self.on.lock()[link].map(|index| self.addrs[index])
    }
}

/// The order of one round over `count` addresses: from the one after
/// `after` (from the first when `None`), wrapping, with the `taken` ones
/// moved to the end.
pub(crate) fn order(count: usize, after: Option<usize>, taken: &[usize]) -> Vec<usize> {
    let start = after.map_or(0, |a| a + 1);
    let (free, taken): (Vec<usize>, Vec<usize>) = (0..count)
        .map(|i| (start + i) % count)
        .partition(|i| !taken.contains(i));
    free.into_iter().chain(taken).collect()
}

/// Resolves every address, in the order given (a host name may give
/// several), dropping repeats. A name that does not resolve is an error:
/// a typo should not quietly make the list shorter.
pub(crate) fn resolve<A: ToSocketAddrs>(
    addrs: impl IntoIterator<Item = A>,
) -> io::Result<Vec<SocketAddr>> {
    let mut list = Vec::new();
    for addr in addrs {
        for resolved in addr.to_socket_addrs()? {
            if !list.contains(&resolved) {
                list.push(resolved);
            }
        }
    }
    if list.is_empty() {
        return Err(io::Error::new(
            ErrorKind::InvalidInput,
            "no address to connect to",
        ));
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_round_starts_at_the_first_address() {
        assert_eq!(order(3, None, &[]), [0, 1, 2]);
        assert_eq!(order(1, None, &[]), [0]);
    }

    #[test]
    fn after_a_loss_the_next_address_comes_first_and_the_lost_one_last() {
        assert_eq!(order(3, Some(0), &[]), [1, 2, 0]);
        assert_eq!(order(3, Some(2), &[]), [0, 1, 2]);
        assert_eq!(order(1, Some(0), &[]), [0]);
    }

    #[test]
    fn the_other_links_address_goes_last() {
        // The second link starts while the first is on address 0…
        assert_eq!(order(3, None, &[0]), [1, 2, 0]);
        // …or on address 1, the first that answered.
        assert_eq!(order(3, None, &[1]), [0, 2, 1]);
        // Lost on 0 while the other link is on 1: 2 first, then back to
        // 0, and 1 only if nothing else answers.
        assert_eq!(order(3, Some(0), &[1]), [2, 0, 1]);
        // Two addresses, the other link on the one after: the lost one is
        // tried again before sharing a node.
        assert_eq!(order(2, Some(0), &[1]), [0, 1]);
        // One address: both links share it, as with a single server.
        assert_eq!(order(1, Some(0), &[0]), [0]);
    }

    #[test]
    fn the_route_knows_where_each_link_is() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let route = Route::new(vec![a, b], 2);
        assert_eq!(route.round(1, None), [0, 1]);
        route.set(0, Some(0));
        assert_eq!(route.addr_of(0), Some(a));
        assert_eq!(route.round(1, None), [1, 0]);
        route.set(0, None);
        assert_eq!(route.addr_of(0), None);
        assert_eq!(route.round(1, Some(1)), [0, 1]);
    }

    #[test]
    fn resolving_keeps_the_order_and_drops_repeats() {
        let list = resolve(["127.0.0.1:2", "127.0.0.1:1", "127.0.0.1:2"]).unwrap();
        let expected: Vec<SocketAddr> = vec![
            "127.0.0.1:2".parse().unwrap(),
            "127.0.0.1:1".parse().unwrap(),
        ];
        assert_eq!(list, expected);
        let none: [&str; 0] = [];
        assert_eq!(resolve(none).unwrap_err().kind(), ErrorKind::InvalidInput);
        assert!(resolve(["not an address"]).is_err());
    }
}
