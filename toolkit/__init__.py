"""What every resnet-lab command shares, with the standard library only: the user-mistake exception
(``toolkit.errors``), atomic file writes (``toolkit.atomic``), the data folder (``toolkit.data_folder``) and the
command-line entry point with the flags every tool names the same way (``toolkit.cli``)."""
