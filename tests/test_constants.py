"""Integer constants written both in the hardware (``hw/``: the datapath's widths) and in
the golden model (``sw/golden/``: the executable specification, with the reasons) agree;
so do the memory latency the lowering plans with and the one the simulated system has."""

from tessera.hw import dma as hdma
from tessera.hw import gelu as hgelu
from tessera.hw import layernorm as hln
from tessera.hw import output_path as hout
from tessera.hw import requant as hrq
from tessera.hw import softmax as hsm
from tessera.hw.isa import ErrorCode
from tessera.sim.accel_system import MEM_LATENCY
from tessera.sw.golden import dma as gdma
from tessera.sw.golden import gelu as ggelu
from tessera.sw.golden import layernorm as gln
from tessera.sw.golden import requant as grq
from tessera.sw.golden import softmax as gsm
from tessera.sw.lower.plan import LATENCY_CYCLES


def test_softmax_constants_agree():
    assert (hsm.EXP_Z_MAX, hsm.EXP_BITS) == (gsm.EXP_Z_MAX, gsm.EXP_BITS)
    assert hsm.RECIP_BITS == gsm.SOFTMAX_RECIP_BITS
    # The unit keeps one bit below the golden model's 8-bit code (floored); the output path
    # rounds it away (half up), which equals rounding the exact value.
    assert hsm.OUT_SHIFT == gsm.SOFTMAX_OUT_SHIFT - 1
    assert hsm.OUT_MAX == 2 * gsm.SOFTMAX_OUT_MAX + 1


def test_gelu_constants_agree():
    assert hgelu.OUT_SHIFT == ggelu.GELU_OUT_SHIFT


def test_layernorm_constants_agree():
    assert (hln.GAMMA_BITS, hln.DEV_BITS, hln.ACC_SHIFT) == \
        (gln.GAMMA_BITS, gln.DEV_BITS, gln.ACC_SHIFT)
    assert hln.RECIP_BITS == gln.LN_RECIP_BITS
    assert 1 << (hln.BETA_BITS - 1) == gln.BETA_LIMIT      # |beta_q| < 2**45: signed 46 bits


def test_row_lengths_agree():
    # One definition (the configuration's limit), and the LayerNorm unit's length field
    # holds it.
    assert hout.MAX_ROW_LEN is gln.MAX_ROW_LEN is gsm.MAX_ROW_LEN
    assert hout.MAX_ROW_LEN < 1 << hln.LENGTH_BITS


def test_requantization_constants_agree():
    assert hrq.MULTIPLIER_BITS == grq.MULTIPLIER_BITS
    assert (1 << hrq.SHIFT_BITS) - 1 == grq.MAX_SHIFT


def test_error_codes_agree():
    assert gdma.ERRORS == {e.name: e.value for e in hdma.DmaError}
    for e in hdma.DmaError:      # the accelerator's codes start with the DMA's
        assert ErrorCode[e.name].value == e.value


def test_the_lowering_plans_with_the_simulated_memory_latency():
    assert LATENCY_CYCLES == MEM_LATENCY
