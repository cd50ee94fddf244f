"""sec4sr's defenses and their presets, registered lazily by path (listing imports no torch-heavy module).

The study's 23 defenses: 14 input transformations (``qt at as ms ds lpf bpf opus speex amr aac-v aac-c mp3-v
mp3-c``; each a component whose defaults are the study's setting), Feature Compression in 8 variants
(``feco-{o,d,c,f}-{k,wk}``: raw / delta / cmvn / final level × k-means / warped k-means) and adversarial training
(``advt``, combinable as ``advt+<chain>``). ``bdr`` (bit-depth reduction) is registered too.
"""

from __future__ import annotations

from sec4sr_core.sdk import Preset, hookimpl

_M = "sec4sr_plugins_defenses"

DEFENSES = [
    ("time_domain:QT", "qt", "Quantisation: round samples to multiples of q (16-bit units); BPDA identity backward."),
    ("time_domain:BDR", "bdr", "Bit-depth reduction to `bits` bits (QT with q = 2^(16-bits)); BPDA identity backward."),
    ("time_domain:AT", "at", "Additive Gaussian noise at an SNR in dB; randomized (seeded), differentiable."),
    ("time_domain:AS", "as", "Average smoothing over an odd window (samples); differentiable."),
    ("time_domain:MS", "ms", "Median smoothing over an odd window (samples); differentiable (subgradient)."),
    ("frequency_domain:DS", "ds", "Down-sampling to ratio·16 kHz and back (sinc); differentiable."),
    ("frequency_domain:LPF", "lpf", "Butterworth low-pass (buttord from pass/stop edges in Hz), float64 SOS via FFT; "
                                    "differentiable."),
    ("frequency_domain:BPF", "bpf", "Butterworth band-pass (buttord from pass/stop edges in Hz), float64 SOS via FFT; "
                                    "differentiable."),
    ("codecs:Opus", "opus", "Opus (libopus) round trip at a bitrate in bps via ffmpeg pipes; BPDA identity backward."),
    ("codecs:Speex", "speex", "Speex wide-band round trip at a bitrate in bps via ffmpeg pipes; BPDA identity backward."),
    ("codecs:AMR", "amr", "AMR-NB (8 kHz) or AMR-WB (16 kHz) round trip at a mode bitrate via ffmpeg; BPDA identity."),
    ("codecs:AACV", "aac-v", "AAC-LC VBR round trip (ffmpeg native encoder, -q:a) via ffmpeg pipes; BPDA identity."),
    ("codecs:AACC", "aac-c", "AAC-LC CBR round trip at a bitrate in bps via ffmpeg pipes; BPDA identity backward."),
    ("codecs:MP3V", "mp3-v", "MP3 VBR (LAME -q:a 0..9) round trip via ffmpeg pipes; BPDA identity backward."),
    ("codecs:MP3C", "mp3-c", "MP3 CBR round trip at a bitrate in bps via ffmpeg pipes; BPDA identity backward."),
    ("feco:FeCo", "feco", "Feature Compression: k-means / warped k-means of feature frames to a ratio; "
                          "differentiable, batched."),
    ("channel:Channel", "channel", "Simulated channel: seeded random room (pyroomacoustics RIR), delay, coloured noise "
                                   "at an SNR, device response, gain, optional codec; randomized, differentiable."),
    ("advt:AdvT", "advt", "Adversarial training (FGSM/PGD): selects an adversarially trained backbone; identity "
                          "at test time."),
    ("detector:WaveGuard", "waveguard", "WaveGuard detector: flags inputs whose scores change under a transform "
                                        "(quantize/resample/lpc/mel); in a chain it applies the transform."),
    ("smoothing:Smooth", "smooth", "Randomized smoothing: majority decision over n Gaussian copies N(0, σ²) "
                                   "(reject class included); randomized; certified by `sec4sr certify`."),
]

FECO_LEVELS = {"o": "raw", "d": "delta", "c": "cmvn", "f": "final"}
FECO_METHODS = {"k": ("kmeans", "k-means (L2, random init)"), "wk": ("warped", "warped k-means (trace segmentation)")}


@hookimpl
def register_defenses(register):
    for target, name, summary in DEFENSES:
        register(f"{_M}.{target}", name=name, summary=summary)


@hookimpl
def register_presets(register):
    register(Preset("qt-512", "defense", "qt", {"q": 512}, "QT with q = 512 (the SEC4SR paper's setting)"))
    register(Preset("amr-wb", "defense", "amr", {"band": "wb"},
                    "AMR-WB at 6.6 kbps (the predecessor's AMR; needs an ffmpeg with libvo_amrwbenc)"))
    for lk, level in FECO_LEVELS.items():
        for mk, (method, what) in FECO_METHODS.items():
            register(Preset(f"feco-{lk}-{mk}", "defense", "feco", {"method": method, "level": level},
                            f"FeCo at the {level} feature level, {what}, ratio 0.5"))
