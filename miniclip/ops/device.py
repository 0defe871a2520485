"""Moving a tensor between devices inside the graph: the gradient moves back the other way."""
from miniclip.backend import device_of, to_device as move_array
from miniclip.tensor import Function


class ToDevice(Function):
    def forward(self, x, device="cpu"):
        self.x_device = device_of(x)
        return move_array(x, device)

    def backward(self, dy):
        return move_array(dy, self.x_device)


def to_device(x, device):
    return ToDevice.apply(x, device=device)
