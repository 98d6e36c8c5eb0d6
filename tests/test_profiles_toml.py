"""Profiles as TOML data (uvmloan/profiles/*.toml, uvmloan.profile_toml) and
the ``uvmloan profiles`` command."""

from __future__ import annotations

import tomllib
from importlib.resources import files
from pathlib import Path

import attrs
import pytest

from uvmloan import Machine, get_profile
from uvmloan.cli import main
from uvmloan.profile import PROFILES, CostModel, NicModel, Profile, list_profiles
from uvmloan.profile_toml import SOURCES, comments, load_profile

SHIPPED = {"netbsd-10", "amd64-mp", "netbsd-1.6", "embedded-2002-up"}


def test_shipped_profiles_are_package_data_found_through_importlib_resources() -> None:
    names = {t.name for t in (files("uvmloan") / "profiles").iterdir()}
    assert {f"{n}.toml" for n in SHIPPED} <= names
    assert set(PROFILES) == SHIPPED
    root = Path(__file__).resolve().parent.parent
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    assert "profiles/*.toml" in pyproject["tool"]["setuptools"]["package-data"]["uvmloan"]
    assert "graft uvmloan/profiles" in (root / "MANIFEST.in").read_text()


def test_netbsd_10_from_toml_is_the_class_defaults() -> None:
    # The file is the data; the class defaults must not drift from it.
    p = PROFILES["netbsd-10"]
    assert p == Profile(name="netbsd-10", description=p.description)
    assert get_profile() is p and p.costs == CostModel() and p.nic == NicModel()


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_every_figure_of_every_shipped_file_has_a_source_comment(name: str) -> None:
    text = (files("uvmloan") / "profiles" / f"{name}.toml").read_text(encoding="utf-8")
    notes = comments(text)
    data = tomllib.loads(text)
    keys = [k for k in data if not isinstance(data[k], dict)]
    keys += [f"{t}.{k}" for t in ("costs", "nic") for k in data.get(t, {})]
    missing = [k for k in keys if k not in ("name", "description", "extends") and not notes[k]]
    assert not missing, f"{name}: no comment for {missing}"


def test_extends_resolves_and_sources_name_the_file() -> None:
    e = PROFILES["embedded-2002-up"]
    # From embedded-2002-up itself, from netbsd-1.6, from netbsd-10:
    assert e.costs.cpu_mhz == 200 and e.multiprocessor is False
    assert e.era == "netbsd-1.6" and e.loan_dequeues and e.toanon_objects
    assert e.page_size == 4096 and e.costs.ipi_send_ns == 300
    src = SOURCES["embedded-2002-up"]
    assert src["costs.cpu_mhz"].file == "uvmloan/profiles/embedded-2002-up.toml"
    assert src["loan_dequeues"].file == "uvmloan/profiles/netbsd-1.6.toml"
    assert src["page_size"].file == "uvmloan/profiles/netbsd-10.toml"
    assert "1.29.2.4" in src["loan_dequeues"].comment


def test_amd64_mp_has_several_cpus_and_a_machine_gets_them() -> None:
    a = PROFILES["amd64-mp"]
    assert a.ncpus == 4 and a.multiprocessor and a.sock_loan_thresh == -1
    # 12.45-12.73 GB/s local memcpy (anchors D1) -> 12500 bytes per us.
    assert a.costs.copy_bw == 12500 and a.costs.copy_ns(12500) == 1000
    # 96 cycles (anchors B) at 3000 MHz.
    assert a.costs.ns_for_cycles(96) == 32 == a.costs.tlbflush_ns
    with Machine(memory="1M", profile="amd64-mp") as m:
        assert m.ncpus == 4
    with Machine(memory="1M") as m:
        assert m.ncpus == 1


def test_embedded_costs_are_integer_and_in_the_stated_ranges() -> None:
    c = PROFILES["embedded-2002-up"].costs
    # the calibration's bound: a memcpy of at most ~16 MB/s (a 64 KiB copy
    # >= 4.2 ms); 12 MB/s: 1448 bytes in 120.7 us (integer ns, truncated)
    assert 10 <= c.copy_bw <= 16 and c.copy_ns(1448) == 1448 * 1000 // 12
    assert PROFILES["embedded-2002-up"].nic.link_bps == 100_000_000
    assert not PROFILES["embedded-2002-up"].nic.cksum_offload


def test_list_profiles() -> None:
    rows = list_profiles()
    assert [n for n, _ in rows] == sorted(SHIPPED) and all(d for _, d in rows)


def _write(tmp_path: Path, text: str, name: str = "p.toml") -> Path:
    f = tmp_path / name
    f.write_text(text)
    return f


HEAD = 'name = "mine"\ndescription = "d"\nextends = "netbsd-10"\n'


def test_user_file_by_path_and_overrides_after_it(tmp_path: Path) -> None:
    f = _write(tmp_path, HEAD + "tp_maxva = 7\n[costs]\ncopy_bw = 500\n[nic]\ntso = true\n")
    p = get_profile(f, seed=3)
    assert (p.name, p.tp_maxva, p.costs.copy_bw, p.nic.tso, p.seed) == ("mine", 7, 500, True, 3)
    assert p.costs.zero_bw == 20000  # the rest from netbsd-10
    assert load_profile(f) == get_profile(f)
    assert get_profile(nic={"link_bps": 10}).nic.link_bps == 10
    with Machine(memory="1M", profile=f) as m:
        assert m.profile.tp_maxva == 7


def test_nic_round_trips_through_a_mapping() -> None:
    p = PROFILES["amd64-mp"]
    back = Profile(**{**attrs.asdict(p), "costs": p.costs})
    assert back == p and isinstance(back.nic, NicModel)


@pytest.mark.parametrize(
    ("text", "exc", "pattern"),
    [
        ("name = \n", ValueError, r"p\.toml: not valid TOML"),
        ('description = "d"\n', ValueError, r"p\.toml: missing name"),
        (
            HEAD + "tp_maxvaa = 1\n",
            ValueError,
            r"p\.toml: unknown profile field\(s\): tp_maxvaa; known: .*tp_maxva",
        ),
        (
            HEAD + 'tp_maxva = "7"\n',
            TypeError,
            r"p\.toml: profile field tp_maxva must be int, not str",
        ),
        (
            HEAD + "[costs]\ncopy_bww = 1\n",
            ValueError,
            r"p\.toml: unknown cost field\(s\): copy_bww; known: .*copy_bw",
        ),
        (HEAD + "[costs]\ncopy_bw = -1\n", ValueError, r"p\.toml: cost copy_bw must be >= 0"),
        (HEAD + "[nic]\nsg = 1\n", TypeError, r"p\.toml: nic sg must be bool, not int"),
        (
            HEAD + "[pmap]\nx = 1\n",
            ValueError,
            r"p\.toml: unknown table \[pmap\]; .*\[costs\], \[nic\]",
        ),
        (HEAD + 'tlb_policy = "sparc"\n', ValueError, r"p\.toml: .*tlb_policy"),
        (
            'name = "x"\ndescription = "d"\nextends = "netbsd-99"\n',
            ValueError,
            r"p\.toml: extends 'netbsd-99': unknown profile; known profiles: amd64-mp, .*netbsd-10",
        ),
        (
            'name = "x"\ndescription = "d"\n',
            ValueError,
            r"p\.toml: a profile without extends must set every field; missing: era",
        ),
    ],
)
def test_bad_files(tmp_path: Path, text: str, exc: type[Exception], pattern: str) -> None:
    f = _write(tmp_path, text)
    with pytest.raises(exc, match=pattern):
        get_profile(f)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"nope\.toml: no such profile file"):
        load_profile(tmp_path / "nope.toml")
    with pytest.raises(ValueError, match="is a directory"):
        load_profile(tmp_path)


# ------------------------------------------------------------------ the command


def test_profiles_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profiles"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == sorted(SHIPPED)
    assert main(["profiles", "list"]) == 0
    assert "netbsd-1.6" in capsys.readouterr().out


def test_profiles_show_every_field_with_value_source_and_file(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["profiles", "show", "netbsd-1.6"]) == 0
    out = capsys.readouterr().out
    assert '  sosend_pendfree = "per-socket"' in out
    assert "sodopendfree" in out and "[uvmloan/profiles/netbsd-1.6.toml]" in out
    assert "  costs.copy_bw = 10000" in out and "[uvmloan/profiles/netbsd-10.toml]" in out
    assert "  nic.link_bps = 100000000" in out
    nfields = (
        len(attrs.fields(Profile)) - 4 + len(attrs.fields(CostModel)) + len(attrs.fields(NicModel))
    )
    assert out.count("\n  ") == 2 * nfields  # a value line and a source line each


def test_profiles_show_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = _write(tmp_path, HEAD + "[costs]\ncopy_bw = 1  # my slow board\n")
    assert main(["profiles", "show", str(f)]) == 0
    out = capsys.readouterr().out
    assert "  costs.copy_bw = 1\n      my slow board  [" + str(f) + "]" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["profiles", "show", "netbsd-99"],
            "unknown profile 'netbsd-99'; known profiles: amd64-mp,",
        ),
        (["profiles", "show", "nope.toml"], "nope.toml: no such profile file"),
        (["profiles", "bogus"], "invalid choice: 'bogus'"),
        (["profiles", "show"], "the following arguments are required"),
    ],
)
def test_profiles_errors_exit_2_with_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as ei:
        main(argv)
    assert ei.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("uvmloan profiles")


def test_profiles_show_a_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = _write(tmp_path, HEAD + 'tp_maxva = "x"\n')
    with pytest.raises(SystemExit) as ei:
        main(["profiles", "show", str(f)])
    assert ei.value.code == 2
    err = capsys.readouterr().err
    assert "profile field tp_maxva must be int, not str 'x'" in err and "Traceback" not in err
