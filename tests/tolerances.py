"""Every tolerance the tests use, in one table (see ../shared/DESIGN.md, "Correct first").

An entry passes when |got - expected| <= atol + rtol * |expected|.
"""
# Finite differences vs backward, float64 only (miniclip.gradcheck's defaults).
GRADCHECK = dict(eps=1e-6, atol=1e-6, rtol=1e-4)

# miniclip vs torch on the same float64 inputs: both compute the same formulas, so they agree
# up to a few float64 roundings (different summation orders).
TORCH_FLOAT64 = dict(rtol=1e-9, atol=1e-12)

# miniclip vs torch in float32 (optimizers step for step, layers in their default dtype).
TORCH_FLOAT32 = dict(rtol=1e-5, atol=1e-6)

# A float32 kernel vs its NumPy reference (attention, softmax, layer norm).
KERNEL_FLOAT32 = dict(rtol=1e-5, atol=1e-6)

# Whole models vs OpenCLIP with the same weights, on the normalised features.
OPENCLIP_FEATURES = dict(rtol=1e-4, atol=1e-4)
