"""The package as a user meets it: `import miniclip`, its version, its licences and data files."""
import configparser
import importlib.metadata
import os
import subprocess
import sys

import miniclip

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_import_miniclip_is_enough_for_its_submodules_and_quick():
    code = ("import time; t = time.perf_counter(); import miniclip; elapsed = time.perf_counter() - t\n"
            "assert callable(miniclip.losses.clip_loss) and callable(miniclip.losses.siglip_loss)\n"
            "assert miniclip.data.ShapesDataset and miniclip.tokenizer.Tokenizer and miniclip.models.create_model\n"
            "print(elapsed)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    print("import miniclip:", result.stdout.strip(), "s")   # timed for the record, not asserted (a shared machine)


def test_one_version_source():
    setup = configparser.ConfigParser()
    setup.read(os.path.join(ROOT, "setup.cfg"))
    assert setup["metadata"]["version"] == "attr: miniclip.__version__"
    assert importlib.metadata.version("miniclip") == miniclip.__version__


def test_licences_and_the_vocabulary_ship_with_the_package():
    setup = configparser.ConfigParser()
    setup.read(os.path.join(ROOT, "setup.cfg"))
    assert "MIT License" in open(os.path.join(ROOT, "LICENSE")).read()
    shipped = setup["options.package_data"]["miniclip.tokenizer"]
    for name in ("bpe_simple_vocab_16e6.txt.gz", "LICENSE-openai-clip.txt"):
        assert name in shipped and os.path.isfile(os.path.join(ROOT, "miniclip", "tokenizer", name))
    assert "Copyright (c) 2021 OpenAI" in open(os.path.join(ROOT, "miniclip", "tokenizer", "LICENSE-openai-clip.txt")).read()
