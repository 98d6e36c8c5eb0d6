"""Round-trip estimation and the retransmission timeout (RFC 6298).

NetBSD's tcp_xmit_timer keeps srtt and rttvar in fixed point and slow ticks;
the model keeps them in exact nanoseconds with the same rules:

* first sample R: SRTT = R, RTTVAR = R/2 (RFC 6298 2.2);
* later samples: RTTVAR = 3/4 RTTVAR + 1/4 |SRTT - R|, SRTT = 7/8 SRTT + 1/8 R (2.3);
* RTO = SRTT + max(G, 4 * RTTVAR), clamped to [rto_min, rto_max] (2.4, 2.5);
* before any sample RTO = the initial value (2.1, TCPTV_SRTTDFLT);
* backoff doubles per retransmission (5.5; NetBSD's tcp_backoff[] table
  doubles up to 64 and stays there), clamped to rto_max;
* after more than TCP_MAXRXTSHIFT/4 backoffs the estimate is considered
  bogus: srtt is folded into rttvar and the next sample restarts it
  (tcp_timer_rexmt, RFC 6298 5.7).
"""

from __future__ import annotations

import attrs

# tcp_timer.c: tcp_backoff[] = { 1, 2, 4, 8, 16, 32, 64, 64, ... }.
TCP_BACKOFF_MAX_SHIFT = 6


@attrs.define(slots=True)
class RTTEstimator:
    rto_initial: int
    rto_min: int
    rto_max: int
    granularity: int = 0
    srtt: int = 0  # 0 means "no estimate yet" (TCPTV_SRTTBASE), as in NetBSD
    rttvar: int = 0
    has_sample: bool = False

    def sample(self, rtt: int) -> None:
        """tcp_xmit_timer: fold one measured round trip (ns) into the estimate."""
        rtt = max(rtt, 0)
        if not self.has_sample:
            self.srtt = rtt
            self.rttvar = rtt // 2
            self.has_sample = True
            return
        delta = abs(self.srtt - rtt)
        self.rttvar = (3 * self.rttvar + delta) // 4
        self.srtt = (7 * self.srtt + rtt) // 8

    def rexmtval(self) -> int:
        """TCP_REXMTVAL before backoff, clamped to [rto_min, rto_max]."""
        if self.has_sample:
            rto = self.srtt + max(self.granularity, 4 * self.rttvar)
        elif self.rttvar:
            # srtt was clobbered after repeated timeouts: keep the RTO it gave.
            rto = 4 * self.rttvar
        else:
            rto = self.rto_initial
        return min(max(rto, self.rto_min), self.rto_max)

    def rto(self, shift: int) -> int:
        """t_rxtcur: the base value backed off ``shift`` times."""
        factor = 1 << min(shift, TCP_BACKOFF_MAX_SHIFT)
        return min(max(self.rexmtval() * factor, self.rto_min), self.rto_max)

    def clobber(self) -> None:
        """tcp_timer_rexmt after > TCP_MAXRXTSHIFT/4 backoffs (RFC 6298 5.7)."""
        if self.has_sample:
            # NetBSD: t_rttvar += t_srtt >> TCP_RTT_SHIFT; in real units that
            # adds srtt/4 to rttvar, so 4*rttvar keeps the current RTO.
            self.rttvar += self.srtt // 4
            self.srtt = 0
            self.has_sample = False
