"""Running the command line inside the test process, and the shape of its error output."""

from MedSAMSegmentLib.cli import main


def call(capsys, *args):
    """The CLI in this process: (exit status, stdout, stderr)."""
    status = main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_one_line_error(err):
    assert err.startswith("medsam-segment: error: ") and err.count("\n") == 1, err
