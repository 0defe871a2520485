"""Sequential and ModuleList: modules that hold other modules under the names "0", "1", ...

Their children are registered like any other submodule, only under their position as the
name, so the state_dict keys are torch's: `resblocks.3.ln_1.weight` for the fourth block of a
ModuleList named resblocks, `layer1.0.conv1.weight` for the first block of a Sequential.

Checked by tests/nn/test_module.py (names, indexing, iteration) and the Sequential gradcheck.
"""
from miniclip.nn.module import Module


class ModuleList(Module):
    """A list of modules whose parameters are registered (a plain Python list's would not be).

    It has no forward: the owner decides how to call its modules, e.g. a loop over blocks.
    """

    def __init__(self, modules=()):
        super().__init__()
        self.extend(modules)

    @classmethod
    def of(cls, modules):
        """A new container of this class holding `modules` (what slicing returns)."""
        return cls(modules)

    def __getitem__(self, index):
        modules = list(self._modules.values())
        return self.of(modules[index]) if isinstance(index, slice) else modules[index]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def append(self, module):
        self.add_module(str(len(self)), module)
        return self

    def extend(self, modules):
        for module in modules:
            self.append(module)
        return self


class Sequential(ModuleList):
    """A ModuleList that calls its modules one after the other: Sequential(a, b, c)(x) == c(b(a(x)))."""

    def __init__(self, *modules):
        super().__init__(modules)

    @classmethod
    def of(cls, modules):
        return cls(*modules)

    def forward(self, x):
        for module in self:
            x = module(x)
        return x
