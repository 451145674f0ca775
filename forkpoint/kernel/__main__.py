"""``python -m forkpoint.kernel -f CONNECTION_FILE``: what the kernelspec runs."""

from ipykernel.kernelapp import IPKernelApp

from forkpoint.kernel.kernel import ForkpointKernel

if __name__ == "__main__":
    IPKernelApp.launch_instance(kernel_class=ForkpointKernel)
