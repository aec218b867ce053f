#!/usr/bin/env python3
"""Tests of scripts/check-layers.py on small made-up crates.

Run from the repository root: python3 scripts/test_check_layers.py
"""

import importlib.util
import pathlib
import tempfile
import textwrap
import unittest

HERE = pathlib.Path(__file__).resolve().parent
spec = importlib.util.spec_from_file_location("check_layers", HERE / "check-layers.py")
layers = importlib.util.module_from_spec(spec)
spec.loader.exec_module(layers)


def crate(files: dict) -> pathlib.Path:
    """A src/ tree declaring every module of the real layer table."""
    root = pathlib.Path(tempfile.mkdtemp()) / "src"
    root.mkdir()
    (root / "lib.rs").write_text("".join(f"pub mod {m};\n" for m in layers.RANK))
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


class Layers(unittest.TestCase):
    def problems(self, files):
        return layers.check(crate(files))

    def test_a_downward_import_passes(self):
        self.assertEqual(self.problems({"engine.rs": "use crate::store::Store;\n"}), [])

    def test_an_upward_crate_import_fails(self):
        found = self.problems({"store.rs": "use crate::engine::Engine;\n"})
        self.assertEqual(len(found), 1)
        self.assertIn("`store` (layer", found[0])
        self.assertIn("uses `engine`", found[0])

    def test_an_upward_super_import_from_a_top_level_file_fails(self):
        found = self.problems({"store.rs": "use super::engine::Engine;\n"})
        self.assertEqual(len(found), 1, found)

    def test_super_super_from_a_nested_file_fails_and_super_to_a_sibling_passes(self):
        found = self.problems({
            "store/owner.rs": "use super::trees::Trees;\nuse super::super::xmpp::Link;\n",
        })
        self.assertEqual(len(found), 1, found)
        self.assertIn(":2:", found[0])

    def test_super_in_an_inline_test_module_is_the_file_itself(self):
        text = """
            mod tests {
                use super::*;
                fn f() { super::super::monitor::run(); }
            }
        """
        found = self.problems({"engine.rs": text})
        self.assertEqual(len(found), 1, found)
        self.assertIn("uses `monitor`", found[0])

    def test_nested_and_multi_line_use_groups_are_read(self):
        text = """
            use crate::{
                clock::Clock,
                report::{Report, Verdict},
                xmpp::Link,
            };
        """
        found = self.problems({"engine.rs": text})
        self.assertEqual(len(found), 1, found)
        self.assertIn("uses `xmpp`", found[0])

    def test_paths_in_expressions_count_and_comments_and_strings_do_not(self):
        text = """
            // crate::xmpp::Link in a comment
            /* crate::xmpp in a block comment */
            const S: &str = "crate::xmpp::Link";
            fn f() { let _ = crate::cli::main(); }
        """
        found = self.problems({"engine.rs": text})
        self.assertEqual(len(found), 1, found)
        self.assertIn("uses `cli`", found[0])

    def test_a_module_without_a_layer_fails(self):
        root = crate({})
        with open(root / "lib.rs", "a") as f:
            f.write("pub mod stray;\n")
        found = layers.check(root)
        self.assertTrue(any("`stray` has no layer" in p for p in found), found)


if __name__ == "__main__":
    unittest.main()
