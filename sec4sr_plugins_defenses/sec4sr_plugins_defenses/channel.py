"""A simulated acoustic channel: room, delay, background noise, playback/recording device, gain and an optional
codec, drawn at random per utterance from a seeded generator — ``channel``.

One draw for a waveform row ``x`` (T samples at 16 kHz) is, in this order::

    room:    x * h            h = one of a bank of shoebox RIRs (pyroomacoustics image method), direct path at lag 0,
                              unit energy, truncated to ``rir_s`` seconds with a raised-cosine fade-out
    delay:   shifted right by d ~ U{0 .. shift_ms} samples (zero-padded, length kept)
    noise:   + n              coloured Gaussian noise with spectrum ∝ f^(-β), β ~ U(0, 2) (white … brown), scaled to
                              an SNR ~ U(snr_min, snr_max) dB against the (detached) power of the reverberant signal
    device:  · |H_dev(f)|     zero-phase magnitude response: ``eq_bands`` peaking bands (gain U(±eq_db) dB, centre
                              log-uniform 100 Hz-6 kHz, width U(0.5, 2) octaves, Gaussian in log-frequency), a
                              2nd-order Butterworth high-pass at U(20, low_cut_max) Hz and a 4th-order low-pass at
                              U(high_cut_min, 8000) Hz (band limits of small loudspeakers / phone microphones)
    gain:    · 10^(g/20)      g ~ U(-gain_db, gain_db)
    codec:   optional round trip through one of the codecs of :mod:`.codecs` (rows chosen with ``codec_p``),
             with a straight-through (BPDA identity) gradient
    clip:    to [-1, 1]

Everything but the codec is differentiable and batched: room, delay and device are one complex multiplication per
row in the rFFT domain (linear convolution, zero-padded to a fast length), so EOT over the channel
(``--adaptive --eot N`` with ``--defense channel``) is ordinary EOT over a randomized defense: every row of the
repeated batch (draws·B rows) gets its own channel.

**Rooms.** The RIR bank (``bank`` rooms) is a pure function of ``rooms_seed`` and the room parameters: room
length/width U(size_min, size_max) m, height U(2.5, 4) m, one energy absorption coefficient U(absorption_min,
absorption_max) for all walls, image sources up to ``max_order``, source and microphone uniform inside at ≥ 0.5 m
from the walls. It is computed once per process and parameter set (~10 ms a room). Different ``rooms_seed`` values
give different (continuous random, hence disjoint) rooms: the evaluation over unseen channels
(``sec4sr_core.study.channels``) uses rooms seeds ≥ 10⁶ (its ``UNSEEN_ROOMS_SEED``), crafting the default 0.

**Per draw.** The room index, delay, noise, device and gain of each row come from the defense's generator
(``seed``), so a seed fixes the whole channel sequence. ``shared=True`` draws one channel per call and applies it to
every row (a fixed channel; the noise samples still differ per row) — the setting of the unseen-channel evaluation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field, model_validator

from sec4sr_core.sdk import BPDA, Defense, ParameterError, Params

SAMPLE_RATE = 16000

CODECS = ("none", "opus", "speex", "amr", "aac-v", "aac-c", "mp3-v", "mp3-c")
_CODEC_CLASSES = {"opus": "Opus", "speex": "Speex", "amr": "AMR", "aac-v": "AACV", "aac-c": "AACC",
                  "mp3-v": "MP3V", "mp3-c": "MP3C"}


class ChannelParams(Params):
    bank: int = Field(16, ge=1, le=4096, description="rooms (RIRs) precomputed per rooms_seed")
    rooms_seed: int = Field(0, ge=0, lt=2**31, description="seed of the room bank (rooms seeds >= 1e6 are the "
                                                           "evaluation's unseen channels)")
    room_p: float = Field(1.0, ge=0.0, le=1.0, description="probability that a draw goes through a room (else dry)")
    size_min: float = Field(3.0, ge=1.5, le=50.0, description="smallest room length/width in metres")
    size_max: float = Field(10.0, ge=1.5, le=50.0, description="largest room length/width in metres")
    absorption_min: float = Field(0.1, gt=0.0, le=1.0, description="smallest wall energy absorption coefficient")
    absorption_max: float = Field(0.7, gt=0.0, le=1.0, description="largest wall energy absorption coefficient")
    max_order: int = Field(12, ge=0, le=40, description="image-source reflection order of the RIRs")
    rir_s: float = Field(0.3, gt=0.0, le=2.0, description="RIR length kept, in seconds")
    shift_ms: float = Field(20.0, ge=0.0, le=1000.0, description="largest delay in milliseconds (uniform from 0)")
    snr_min: float = Field(15.0, ge=-20.0, le=100.0, description="lowest background-noise SNR in dB")
    snr_max: float = Field(35.0, ge=-20.0, le=100.0, description="highest background-noise SNR in dB")
    eq_bands: int = Field(3, ge=0, le=16, description="random peaking bands of the device response")
    eq_db: float = Field(6.0, ge=0.0, le=30.0, description="largest |gain| of a peaking band in dB")
    low_cut_max: float = Field(300.0, ge=20.0, le=4000.0, description="highest device high-pass corner in Hz "
                                                                       "(uniform from 20 Hz)")
    high_cut_min: float = Field(3400.0, ge=500.0, le=8000.0, description="lowest device low-pass corner in Hz "
                                                                          "(uniform up to 8 kHz)")
    gain_db: float = Field(3.0, ge=0.0, le=40.0, description="largest |overall gain| in dB")
    codec: Literal[CODECS] = Field("none", description="codec round trip at its defaults: none, " + ", ".join(CODECS[1:]))
    codec_p: float = Field(1.0, ge=0.0, le=1.0, description="probability that a draw goes through the codec")
    shared: bool = Field(False, description="one channel per call for every row (a fixed channel) instead of one "
                                            "per row")

    @model_validator(mode="after")
    def _ranges(self):
        for lo, hi in (("size_min", "size_max"), ("absorption_min", "absorption_max"), ("snr_min", "snr_max")):
            if getattr(self, lo) > getattr(self, hi):
                raise ValueError(f"{lo} ({getattr(self, lo)}) must not exceed {hi} ({getattr(self, hi)})")
        if self.low_cut_max >= self.high_cut_min:
            raise ValueError(f"low_cut_max ({self.low_cut_max} Hz) must be below high_cut_min ({self.high_cut_min} Hz)")
        return self


@dataclass(frozen=True)
class Room:
    """One room of a bank: dimensions (m), absorption, source and microphone positions (m), Sabine RT60 (s)."""

    dims: tuple[float, float, float]
    absorption: float
    source: tuple[float, float, float]
    mic: tuple[float, float, float]
    rt60: float


#: frequencies (0 .. 8 kHz, linear) at which the smooth device response is evaluated before interpolation
RESPONSE_POINTS = 513

_BANKS: dict[tuple, tuple[list[Room], torch.Tensor]] = {}
_KEEP_BANKS = 64


def _room_key(p: ChannelParams) -> tuple:
    return (p.rooms_seed, p.bank, p.size_min, p.size_max, p.absorption_min, p.absorption_max, p.max_order, p.rir_s)


def room_bank(p: ChannelParams) -> tuple[list[Room], torch.Tensor]:
    """The rooms and their RIRs (bank, L) float32 on the CPU for the room parameters of ``p`` (cached)."""
    key = _room_key(p)
    if key in _BANKS:
        return _BANKS[key]
    import numpy as np
    import pyroomacoustics as pra

    rng = np.random.RandomState(p.rooms_seed)
    length = max(1, int(round(p.rir_s * SAMPLE_RATE)))
    fade = min(length, max(1, length // 10))
    taper = np.ones(length)
    taper[length - fade:] = 0.5 * (1 + np.cos(np.linspace(0, math.pi, fade)))
    rooms, rirs = [], np.zeros((p.bank, length), dtype=np.float64)
    for i in range(p.bank):
        lw = rng.uniform(p.size_min, p.size_max, size=2)
        dims = np.array([lw[0], lw[1], rng.uniform(2.5, 4.0)])
        a = float(rng.uniform(p.absorption_min, p.absorption_max))
        margin = np.minimum(0.5, dims / 4)
        src = rng.uniform(margin, dims - margin)
        mic = rng.uniform(margin, dims - margin)
        room = pra.ShoeBox(dims, fs=SAMPLE_RATE, materials=pra.Material(a), max_order=p.max_order,
                           air_absorption=False)
        room.add_source(src)
        room.add_microphone(mic)
        room.compute_rir()
        h = np.asarray(room.rir[0][0], dtype=np.float64)
        h = h[int(np.argmax(np.abs(h))):][:length]  # direct path at lag 0 (the delay is drawn separately)
        h = np.pad(h, (0, length - h.shape[0])) * taper
        rirs[i] = h / max(np.sqrt((h ** 2).sum()), 1e-12)
        volume, surface = float(np.prod(dims)), 2 * float(dims[0] * dims[1] + dims[0] * dims[2] + dims[1] * dims[2])
        rooms.append(Room(tuple(map(float, dims)), a, tuple(map(float, src)), tuple(map(float, mic)),
                          0.161 * volume / (surface * a)))
    out = (rooms, torch.from_numpy(rirs.astype(np.float32)))
    _BANKS[key] = out
    while len(_BANKS) > _KEEP_BANKS:
        _BANKS.pop(next(iter(_BANKS)))
    return out


@dataclass
class ChannelDraw:
    """The random parameters of R channel draws (every tensor has R rows, on one device)."""

    room: torch.Tensor  #: (R,) int64 index into the bank, −1 = no room
    shift: torch.Tensor  #: (R,) int64 delay in samples
    snr_db: torch.Tensor  #: (R,) noise SNR in dB
    tilt: torch.Tensor  #: (R,) noise spectral exponent β (power ∝ f^-β)
    eq_gain_db: torch.Tensor  #: (R, bands) peaking gains in dB
    eq_centre: torch.Tensor  #: (R, bands) peaking centres in Hz
    eq_width: torch.Tensor  #: (R, bands) peaking widths in octaves (standard deviation of the Gaussian)
    low_cut: torch.Tensor  #: (R,) high-pass corner in Hz
    high_cut: torch.Tensor  #: (R,) low-pass corner in Hz
    gain_db: torch.Tensor  #: (R,) overall gain in dB
    codec: torch.Tensor  #: (R,) bool, True = through the codec

    def repeat(self, r: int) -> "ChannelDraw":
        """A draw of one row repeated to ``r`` rows."""
        return ChannelDraw(**{k: v.expand(r, *v.shape[1:]).clone() for k, v in self.__dict__.items()})


class Channel(Defense):
    """Simulated channel: random room (pyroomacoustics RIR), delay, coloured noise at an SNR, device response,
    gain and optional codec per utterance; randomized (seeded), differentiable (codec: straight-through)."""

    name = "channel"
    Params = ChannelParams
    differentiable = True
    randomized = True

    def __init__(self, params=None, **kwargs) -> None:
        super().__init__(params, **kwargs)
        self._rirs: dict[tuple, torch.Tensor] = {}  # (n_fft, device) -> rFFT of the bank (bank, F)
        self._codec = None
        if self.params.codec != "none":
            from . import codecs

            self._codec = getattr(codecs, _CODEC_CLASSES[self.params.codec])()

    # -- the room bank ------------------------------------------------------------------------------------------
    @property
    def rooms(self) -> list[Room]:
        """The bank's rooms (computing the bank on first use)."""
        return room_bank(self.params)[0]

    def _rir_spectrum(self, n_fft: int, device: torch.device) -> torch.Tensor:
        key = (n_fft, str(device))
        if key not in self._rirs:
            rirs = room_bank(self.params)[1].to(device)
            self._rirs = {key: torch.fft.rfft(rirs, n=n_fft)}  # keep one FFT size (the batch length rarely changes)
        return self._rirs[key]

    # -- draws --------------------------------------------------------------------------------------------------
    def draw(self, r: int, device: torch.device | str = "cpu") -> ChannelDraw:
        """Random parameters of ``r`` channels from the defense's generator (on ``device``)."""
        p = self.params
        g = self.rng(torch.device(device))
        dev = torch.device(device)

        def u(lo: float, hi: float, *shape: int) -> torch.Tensor:
            return lo + (hi - lo) * torch.rand((r, *shape), generator=g, device=dev)

        room = torch.randint(0, p.bank, (r,), generator=g, device=dev)
        room = torch.where(u(0.0, 1.0) < p.room_p, room, torch.full_like(room, -1))
        shift = torch.floor(u(0.0, 1.0) * (p.shift_ms * SAMPLE_RATE / 1000 + 1)).long()
        draw = ChannelDraw(
            room=room, shift=shift, snr_db=u(p.snr_min, p.snr_max), tilt=u(0.0, 2.0),
            eq_gain_db=u(-p.eq_db, p.eq_db, p.eq_bands),
            eq_centre=torch.exp(u(math.log(100.0), math.log(6000.0), p.eq_bands)),
            eq_width=u(0.5, 2.0, p.eq_bands),
            low_cut=u(20.0, p.low_cut_max), high_cut=u(p.high_cut_min, SAMPLE_RATE / 2),
            gain_db=u(-p.gain_db, p.gain_db), codec=u(0.0, 1.0) < p.codec_p,
        )
        return draw

    def device_response(self, draw: ChannelDraw, freqs: torch.Tensor) -> torch.Tensor:
        """Magnitude (R, F) of the device (peaking bands, band limits) and gain at ``freqs`` (F,) Hz."""
        f = freqs.clamp_min(1.0).unsqueeze(0)  # (1, F); DC gets the 1 Hz value of the high-pass (≈ 0)
        octaves = torch.log2(f.unsqueeze(-1) / draw.eq_centre.unsqueeze(1))  # (R, F, bands)
        db = (draw.eq_gain_db.unsqueeze(1) * torch.exp(-0.5 * (octaves / draw.eq_width.unsqueeze(1)) ** 2)).sum(-1)
        db = db + draw.gain_db.unsqueeze(1)
        hp = 1.0 / torch.sqrt(1.0 + (draw.low_cut.unsqueeze(1) / f) ** 4)
        lp = 1.0 / torch.sqrt(1.0 + (f / draw.high_cut.unsqueeze(1)) ** 8)
        return 10.0 ** (db / 20.0) * hp * lp

    def noise(self, draw: ChannelDraw, t: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """Unit-RMS coloured noise (R, 1, t) with power spectrum ∝ f^-β per row."""
        g = self.rng(device)
        white = torch.randn((draw.snr_db.shape[0], t), generator=g, device=device, dtype=dtype)
        spec = torch.fft.rfft(white)
        log_f = torch.fft.rfftfreq(t, 1.0 / SAMPLE_RATE).to(device=device, dtype=dtype).clamp_min(SAMPLE_RATE / t).log()
        shaped = torch.fft.irfft(spec * torch.exp(-0.5 * draw.tilt.to(dtype).unsqueeze(1) * log_f.unsqueeze(0)), n=t)
        shaped = shaped - shaped.mean(dim=-1, keepdim=True)
        return (shaped / shaped.pow(2).mean(dim=-1, keepdim=True).sqrt().clamp_min(1e-12)).unsqueeze(1)

    # -- forward ------------------------------------------------------------------------------------------------
    def apply(self, x: torch.Tensor, draw: ChannelDraw) -> torch.Tensor:
        """The channel ``draw`` (R rows) applied to ``x`` (R, 1, T) in [-1, 1]; output (R, 1, T) in [-1, 1]."""
        if x.dim() != 3 or x.shape[1] != 1:
            raise ParameterError(f"{self.name}: expected a waveform batch (B, 1, T), got shape {tuple(x.shape)}")
        r, _, t = x.shape
        dev, dtype = x.device, x.dtype
        p = self.params
        length = int(round(p.rir_s * SAMPLE_RATE))
        n_fft = _fast_len(t + length + int(p.shift_ms * SAMPLE_RATE / 1000) + 1)
        spec = torch.fft.rfft(x[:, 0], n=n_fft)  # (R, F)
        bank = self._rir_spectrum(n_fft, dev)
        room = draw.room.to(dev)
        h = torch.where((room >= 0).unsqueeze(1), bank[room.clamp_min(0)], torch.ones_like(bank[:1]))
        y = torch.fft.irfft(spec * h, n=n_fft)
        idx = torch.arange(t, device=dev).unsqueeze(0) - draw.shift.to(dev).unsqueeze(1)  # delay: y[i - d], 0 before
        y = torch.where(idx >= 0, y.gather(1, idx.clamp_min(0)), torch.zeros((), device=dev, dtype=y.dtype))
        power = y.detach().pow(2).mean(dim=-1, keepdim=True)
        std = torch.sqrt(power * 10.0 ** (-draw.snr_db.to(dev, dtype).unsqueeze(1) / 10.0))
        y = y + std * self.noise(draw, t, dev, dtype)[:, 0]
        bins = n_fft // 2 + 1
        coarse = torch.linspace(0.0, SAMPLE_RATE / 2, RESPONSE_POINTS, device=dev, dtype=dtype)
        response = self.device_response(_on(draw, dev, dtype), coarse)  # smooth: sampled coarsely, interpolated
        response = torch.nn.functional.interpolate(response.unsqueeze(1), size=bins, mode="linear",
                                                   align_corners=True)[:, 0]
        y = torch.fft.irfft(torch.fft.rfft(y, n=n_fft) * response, n=n_fft)[:, :t].unsqueeze(1)
        if self._codec is not None:
            rows = draw.codec.to(dev).nonzero().flatten()
            if rows.numel():
                coded = BPDA(lambda z: self._codec(z.clamp(-1.0, 1.0)))(y[rows])
                y = y.index_copy(0, rows, coded)
        return y.clamp(-1.0, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[1] != 1:
            raise ParameterError(f"{self.name}: expected a waveform batch (B, 1, T), got shape {tuple(x.shape)}")
        draw = self.draw(1, x.device).repeat(x.shape[0]) if self.params.shared else self.draw(x.shape[0], x.device)
        return self.apply(x, draw)


def _on(draw: ChannelDraw, device: torch.device, dtype: torch.dtype) -> ChannelDraw:
    return ChannelDraw(**{k: (v.to(device, dtype) if v.is_floating_point() else v.to(device))
                          for k, v in draw.__dict__.items()})


def _fast_len(n: int) -> int:
    """The smallest 2^a·3^b·5^c ≥ n (a fast FFT length)."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            q = p35
            while q < n:
                q *= 2
            best = min(best, q)
            p35 *= 3
        p5 *= 5
    return best
