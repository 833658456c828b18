"""The figures' text in the report's HTML tables and the model card's markdown (one formatter)."""

from kiln.distribution import publish, report


def test_absent_figure_is_a_dash_never_a_number():
    assert report.format_value(None) == "–"
    assert publish._num(None) == "–"


def test_failed_check_stands_out_in_each_format():
    assert report._cell(False) == "NO" and report._cell(True) == "yes"
    assert publish._num(False) == "**no**" and publish._num(True) == "yes"


def test_floats_keep_significant_digits_and_html_is_escaped():
    assert report.format_value(0.000123456) == "0.0001235"
    assert publish._num(41.98765, 3) == "42"
    assert report._cell("<b>&") == "&lt;b&gt;&amp;"
    assert publish._num("<b>") == "<b>"
