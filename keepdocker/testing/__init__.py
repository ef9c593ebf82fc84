"""Test helpers shipped with keepdocker: a private Docker engine, a stand-in Arvados, archive builders."""
