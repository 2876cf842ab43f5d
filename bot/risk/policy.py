"""Risk policies: pydantic models of config/risk/*.toml, turned into the engine's array."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from bot.errors import ConfigError, LiqbotError
from bot.risk import engine as en

PRESET_DIR = Path(__file__).resolve().parents[2] / "config" / "risk"
PRESETS = ("conservative", "balanced", "aggressive")


class RiskPolicy(BaseModel):
    """Every rule's knobs. Leverage = position notional / equity; notionals in quote."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_leverage: float = Field(20.0, gt=0, le=125, description="hard cap, any strategy")
    max_order_notional: float = Field(5e6, gt=0)
    max_position_notional: float = Field(2e7, gt=0)
    daily_loss: float = Field(0.15, gt=0, le=1, description="halt for the day at this loss")
    max_drawdown: float = Field(0.30, gt=0, le=1, description="halt at this drawdown from peak")
    drawdown_cooldown_hours: float = Field(24.0, ge=0, description="drawdown halt lasts this "
                                           "long, then the peak resets to equity")
    stale_bars: int = Field(5, ge=1, description="bars without trades before REDUCING")
    min_liq_atr: float = Field(8.0, ge=0, description="own liquidation closer than this: trip")
    liq_release_atr: float = Field(16.0, ge=0, description="tripped: cap at this distance; "
                                   "release once the tripping leverage sits this far")
    liq_shrink: float = Field(0.0, ge=0, le=1, description="trip only once the distance "
                              "has shrunk below this share of the distance at opening (or "
                              "below half of min_liq_atr); 0: off")
    lev_base: float = Field(20.0, gt=0, description="schedule: max leverage when uncrowded")
    lev_min: float = Field(2.0, ge=0, description="schedule: max leverage at crowding 1")
    crowd_start: float = Field(0.3, ge=0, lt=1, description="schedule starts falling here")
    cluster_k_atr: float = Field(4.0, ge=0, description="guard clusters within this many ATRs")
    cluster_buffer: float = Field(0.005, ge=0, lt=0.5, description="beyond the far edge by")
    cluster_min_share: float = Field(0.05, ge=0, le=1, description="dense = this share of side")
    mmr: float = Field(0.005, gt=0, lt=0.5, description="maintenance rate for the guard's maths")
    cascade_mode: StrictBool = True
    cascade_max_leverage: float = Field(2.0, ge=0)
    cascade_reach_atr: float = Field(0.0, ge=0, description="cascade acts only on a side whose "
                                     "liquidation sits within this many ATRs (0: always, cut "
                                     "to cascade_max_leverage and block all entries)")
    cascade_near_atr: float = Field(0.0, ge=0, description="with a reach: a position "
                                    "liquidated within this many ATRs is cut at the cascade's "
                                    "first bar, one farther away (within reach) only once the "
                                    "cascade has run cascade_confirm_atr ATRs on (0: all at "
                                    "once)")
    cascade_confirm_atr: float = Field(1.0, ge=0, description="ATRs the close must move on "
                                       "past the cascade's first bar to confirm it")
    cascade_flat_atr: float = Field(0.0, ge=0, description="once a cascade against a side "
                                    "has run this many ATRs past its first close, the side "
                                    "is closed until the cascade ends (0: off)")
    min_cut: float = Field(0.0, ge=0, lt=1, description="a soft cap cutting the held "
                           "leverage by less than this fraction leaves the position as it is")
    hedge: StrictBool = True
    hedge_threshold: float = Field(0.8, ge=0, le=1)
    hedge_fraction: float = Field(0.5, ge=0, le=1)
    hedge_unwind: float = Field(0.5, ge=0, le=1)

    @field_validator("lev_min")
    @classmethod
    def _schedule_falls(cls, lev_min: float, info: ValidationInfo) -> float:
        """The schedule falls from lev_base (uncrowded) to lev_min (crowding 1): a lev_min
        above lev_base would RAISE the cap as the crowd builds."""
        base = info.data.get("lev_base")
        if base is not None and lev_min > base:
            raise ValueError(f"at most lev_base = {base:g} (the schedule falls from lev_base "
                             "to lev_min as crowding rises)")
        return lev_min

    @field_validator("hedge_unwind")
    @classmethod
    def _hedge_hysteresis(cls, unwind: float, info: ValidationInfo) -> float:
        """A hedge opens at hedge_threshold and closes below hedge_unwind: at or above the
        threshold it would open and close on the same readings (measured: 10 trades
        instead of 3 on cascade-long with 0.9 / 0.3)."""
        threshold = info.data.get("hedge_threshold")
        if threshold is not None and unwind >= threshold:
            raise ValueError(f"below hedge_threshold = {threshold:g} (hedge at the threshold, "
                             "unwind below this: the gap is the hysteresis)")
        return unwind

    @field_validator("cascade_near_atr")
    @classmethod
    def _near_within_reach(cls, near: float, info: ValidationInfo) -> float:
        """The near tier grades positions inside the reach: without a reach it would be
        ignored, beyond it it would never apply. Either is a config mistake, said so."""
        reach = info.data.get("cascade_reach_atr")
        if near > 0.0 and reach is not None and reach <= 0.0:
            raise ValueError("0 while cascade_reach_atr is 0 (the near tier grades the "
                             "positions within a reach; set cascade_reach_atr first)")
        if near > 0.0 and reach is not None and near > reach:
            raise ValueError(f"at most cascade_reach_atr = {reach:g} (0: no near tier)")
        return near

    def to_array(self) -> np.ndarray:
        p = np.zeros(en.N_POLICY)
        p[en.P_MAX_LEV_HARD] = self.max_leverage
        p[en.P_MAX_ORDER_NOTIONAL] = self.max_order_notional
        p[en.P_MAX_POS_NOTIONAL] = self.max_position_notional
        p[en.P_DAILY_LOSS] = self.daily_loss
        p[en.P_MAX_DRAWDOWN] = self.max_drawdown
        p[en.P_STALE_BARS] = self.stale_bars
        p[en.P_MIN_LIQ_ATR] = self.min_liq_atr
        p[en.P_LEV_BASE] = self.lev_base
        p[en.P_LEV_MIN] = self.lev_min
        p[en.P_CROWD_START] = self.crowd_start
        p[en.P_CLUSTER_K_ATR] = self.cluster_k_atr
        p[en.P_CLUSTER_BUFFER] = self.cluster_buffer
        p[en.P_CLUSTER_MIN_SHARE] = self.cluster_min_share
        p[en.P_MMR] = self.mmr
        p[en.P_CASCADE_ON] = float(self.cascade_mode)
        p[en.P_CASCADE_MAX_LEV] = self.cascade_max_leverage
        p[en.P_HEDGE_ON] = float(self.hedge)
        p[en.P_HEDGE_THRESHOLD] = self.hedge_threshold
        p[en.P_HEDGE_FRACTION] = self.hedge_fraction
        p[en.P_HEDGE_UNWIND] = self.hedge_unwind
        p[en.P_LIQ_RELEASE_ATR] = max(self.liq_release_atr, self.min_liq_atr)
        p[en.P_DD_COOLDOWN_H] = self.drawdown_cooldown_hours
        p[en.P_CASCADE_REACH_ATR] = self.cascade_reach_atr
        p[en.P_MIN_CUT] = self.min_cut
        p[en.P_LIQ_SHRINK] = self.liq_shrink
        p[en.P_CASCADE_NEAR_ATR] = self.cascade_near_atr
        p[en.P_CASCADE_CONFIRM_ATR] = self.cascade_confirm_atr
        p[en.P_CASCADE_FLAT_ATR] = self.cascade_flat_atr
        return p


def off_policy() -> RiskPolicy:
    """Risk OFF: no rule, no halt, no leverage cap of ours (only the exchange's own bracket
    limits, which the trading kernel applies to every run). Built without validation
    because its caps lie beyond what a user may configure."""
    return RiskPolicy.model_construct(
        **{**RiskPolicy().model_dump(),
           **dict(max_leverage=1e9, max_order_notional=1e15, max_position_notional=1e15,
                  daily_loss=1.0, max_drawdown=1.0, stale_bars=10**9, min_liq_atr=0.0,
                  liq_release_atr=0.0,
                  lev_base=1e9, lev_min=1e9, crowd_start=0.99, cluster_k_atr=0.0,
                  cascade_mode=False, hedge=False)})


def load_policy(name_or_path: str) -> RiskPolicy:
    """A preset by name (conservative, balanced, aggressive) or a TOML file path."""
    path = PRESET_DIR / f"{name_or_path}.toml" if name_or_path in PRESETS else Path(name_or_path)
    if not path.is_file():
        raise LiqbotError(f"--preset: expected one of {', '.join(PRESETS)} or a TOML file, got "
                          f"{name_or_path!r}" + (" (no such file)" if path.suffix else ""))
    from bot.config import _format_problem, read_toml
    tree = read_toml(path)
    # a problem is named by its key path in the file: `risk.crowd_start` under a [risk]
    # table (as the shipped presets have it), `crowd_start` in a file of bare keys
    table = ("risk",) if "risk" in tree else ()
    try:
        return RiskPolicy.model_validate(tree.get("risk", tree))
    except ValidationError as exc:
        raise ConfigError(str(path), [_format_problem({**e, "loc": (*table, *e["loc"])})
                                      for e in exc.errors()]) from None
