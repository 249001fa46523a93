"""Pure numpy test signals."""
import numpy as np


def tone(freq, seconds, sr=16000, amp=0.3):
    """A sine whose frequency may vary (array of per-sample Hz or a constant)."""
    n = int(seconds * sr)
    f = np.broadcast_to(np.asarray(freq, dtype=np.float64), (n,))
    return (amp * np.sin(2 * np.pi * np.cumsum(f) / sr)).astype(np.float32)
