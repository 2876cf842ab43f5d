"""Human text for risk decisions (rendered outside the numba kernel)."""

from __future__ import annotations

import numpy as np

from bot.risk import engine as en

#: the operator's kill switch (`liqbot halt`): a daemon reason, not a rule of the engine;
#: the daemon ORs it into the decision's reasons while the switch is on
R_KILL_SWITCH = 1 << 20

_TEXT = {
    en.R_CROWDING: "crowding {crowd:.2f} lowers the side's max leverage to {cap:.1f}x",
    en.R_CLUSTER: "liquidation cluster at {cluster:,.2f} within reach: leverage capped at "
                  "{cluster_cap:.1f}x to keep our liquidation beyond it",
    en.R_CASCADE: "cascade running against the position: reducing",
    en.R_CASCADE_BLOCK: "entries on the liquidated side blocked until exhaustion (with a "
                        "cascade reach: beyond the leverage the cascade cannot liquidate)",
    en.R_HEDGE: "side crowded {crowd:.2f}: hedge {hedge:,.0f}",
    en.R_HEDGE_UNWIND: "crowding normalised: hedge unwound",
    en.R_HARD_LEVERAGE: "hard leverage limit",
    # tripped, the cap holds until the leverage it tripped at would sit the release distance
    # away, so the position's own distance may already be far: say that it is the latch
    en.R_LIQ_DISTANCE: "liquidation-distance rule tripped: leverage capped at {cap:.1f}x "
                       "(own liquidation {liq_atr:.1f} ATR away)",
    en.R_STALE: "market data stale: reducing",
    en.R_DAILY_LOSS: "daily loss {day:.1%}: halted for the day",
    en.R_DRAWDOWN: "drawdown {dd:.1%}: halted",
    R_KILL_SWITCH: "operator kill switch",
}
# while HALTED the decision's caps are 0 (the halt's), so the capping rules name no value
_HALTED_CAPS = {
    en.R_CROWDING: "crowding {crowd:.2f} lowers the side's max leverage",
    en.R_LIQ_DISTANCE: "liquidation-distance rule tripped (own liquidation {liq_atr:.1f} ATR "
                       "away)",
}
_CASCADE_RUN = "cascade running against the position ({run:+.1f} ATR on since it fired): reducing"
_LIQ_ENTRY = ("entry capped where a trip would cut it: the target's liquidation would sit "
              "inside the distance the liquidation-distance rule trips at")
_CASCADE_FLAT = ("cascade running against the position ({run:+.1f} ATR on since it fired): "
                 "closing the side until it ends")


#: every reason bit by name (the engine's rules, then the kill switch)
REASONS = {**{k[2:].lower(): int(v) for k, v in vars(en).items() if k.startswith("R_")},
           "kill_switch": R_KILL_SWITCH}


def reason_names(mask: int) -> list[str]:
    """The names of the reason bits set in `mask`, in bit order."""
    return [name for name, bit in sorted(REASONS.items(), key=lambda kv: kv[1]) if mask & bit]


def render(decision: np.ndarray, position_side: float = 1.0) -> str:
    """'REDUCING: cascade running against the position: reducing; ...'."""
    mask = int(decision[en.D_REASONS])
    cap = decision[en.D_MAX_LEV_LONG] if position_side >= 0 else decision[en.D_MAX_LEV_SHORT]
    values = {"crowd": decision[en.D_CROWD], "cap": cap,
              "cluster": decision[en.D_CLUSTER_PRICE], "cluster_cap": decision[en.D_CLUSTER_CAP],
              "hedge": decision[en.D_HEDGE_NOTIONAL], "liq_atr": decision[en.D_LIQ_DISTANCE_ATR],
              "day": decision[en.D_DAY_LOSS], "dd": decision[en.D_DRAWDOWN]}
    run = decision[en.D_CASCADE_RUN] + 0.0     # + 0.0: the first bar of a short cascade is -0.0
    text = _TEXT if run != run else {**_TEXT, en.R_CASCADE: _CASCADE_RUN}
    if run == run and cap == 0.0 and decision[en.D_STATE] != en.HALTED:
        text = {**text, en.R_CASCADE: _CASCADE_FLAT}     # cascade_flat_atr: side closed
    if decision[en.D_STATE] == en.HALTED:      # the caps read 0 while halted: not the rules'
        text = {**text, **_HALTED_CAPS}
    if values["liq_atr"] != values["liq_atr"]:  # no position: the rule capped an entry
        text = {**text, en.R_LIQ_DISTANCE: _LIQ_ENTRY}
    parts = [text[b].format(run=run, **values) for b in sorted(text) if mask & b]
    state = en.STATE_NAMES[int(decision[en.D_STATE])]
    return f"{state}: " + ("; ".join(parts) if parts else "no rule binding")
