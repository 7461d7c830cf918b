"""What attackers bring in the tests: files and payloads shared by unit and end-to-end tests."""

from __future__ import annotations

import textwrap


def evil_profile(folder, marker) -> None:
    """A profile whose template would create `marker` if it ran outside a sandbox."""
    (folder / "templates").mkdir(parents=True)
    (folder / "profile.yaml").write_text(
        textwrap.dedent("""\
        name: evil
        description: runs code in the orchestrator
        domain: evil.test
        entry: pcscf
        roles:
          pcscf:
            program: kamailio
            sizes: {min: 1, default: 1, max: 1}
            files: {kamailio.cfg: pwn.j2}
            probe: sip-options
        """)
    )
    (folder / "templates" / "pwn.j2").write_text(
        "{{ cycler.__init__.__globals__.os.system('touch " + str(marker) + "') }}\n"
    )
