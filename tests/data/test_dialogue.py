import pytest

from bsmfusion.data.dialogue import CleaningOptions, Message, parse_segments, parse_thread

LOWER = CleaningOptions(lowercase=True)


def test_eos_separated_role_turns():
    thread = "YOU: i would like 4 hats . <eos> THEM: deal <eos>"
    assert parse_thread(thread) == [Message("you", "i would like 4 hats ."), Message("them", "deal")]


def test_pipe_separated_buyer_seller():
    thread = "BUYER: hi there ||| SELLER: Good Day! ||| BUYER: how are you?"
    assert [m.role for m in parse_thread(thread)] == ["buyer", "seller", "buyer"]
    assert parse_thread(thread)[1].text == "Good Day!"


def test_roles_on_one_line_and_numbered_roles():
    assert parse_thread("BUYER: hi SELLER: hello there BUYER: ok") == [
        Message("buyer", "hi"), Message("seller", "hello there"), Message("buyer", "ok")]
    assert parse_thread("A1: hello\nA2: hi\nmore from a2") == [Message("a1", "hello"), Message("a2", "hi more from a2")]


def test_lowercase_prose_colon_is_not_a_role():
    assert parse_thread("tell me: is it new?") == [Message(None, "tell me: is it new?")]


def test_bom_eom_markers_with_html_break_inside_one_message():
    thread = "[bom] Hi, is this available? [eom][bom] Yes it is <br> still here [eom]"
    assert parse_thread(thread) == [Message(None, "Hi, is this available?"), Message(None, "Yes it is still here")]


def test_nested_and_missing_markers():
    thread = "[bom] buyer: hello [bom] nested [eom] trailing without end"
    assert parse_thread(thread) == [Message("buyer", "hello"), Message(None, "nested"), Message(None, "trailing without end")]
    assert parse_thread("no start marker [eom] next") == [Message(None, "no start marker"), Message(None, "next")]


def test_mixed_formats_markers_roles_and_eos():
    thread = "[bom] BUYER: is it new? <eos> SELLER: yes [eom] [BOM]buyer: ok[EOM]"
    assert parse_thread(thread) == [Message("buyer", "is it new?"), Message("seller", "yes"), Message("buyer", "ok")]


def test_newline_separated_and_plain_text():
    assert [m.text for m in parse_thread("first line\nsecond line\n\nthird")] == ["first line", "second line", "third"]
    assert parse_thread("just one message") == [Message(None, "just one message")]


def test_html_entities_tags_zero_width_and_controls():
    thread = "<p>Hello&nbsp;<b>World</b> &amp; co</p>\u200b\u200d\x07 price &lt; 5"
    texts = [m.text for m in parse_thread(thread)]
    assert texts == ["Hello World & co", "price < 5"]
    assert parse_thread("price < 100 and > 50")[0].text == "price < 100 and > 50"


def test_script_and_style_contents_are_dropped():
    thread = ("BUYER: <style type='text/css'>p { color: red }</style>Is it new? <script>var x = '<b>'; alert(1)</script>"
              " <eos> SELLER: yes<SCRIPT src=a.js></SCRIPT > thanks <Style>.a{}</style >")
    assert [(m.role, m.text) for m in parse_thread(thread)] == [("buyer", "Is it new?"), ("seller", "yes thanks")]
    # an opening tag that is never closed loses only the tag: the messages after it are kept
    assert [m.text for m in parse_thread("<script>hello there\nsecond")] == ["hello there", "second"]
    # a long run of unclosed openings stays fast (each search starts where the last ended)
    assert parse_thread("<script>" * 20_000 + "end")[0].text == "end"


def test_urls_and_emails_become_placeholders_and_can_be_kept():
    thread = "see https://shop.example.com/item?id=3 or mail a.b@c.org now"
    assert parse_thread(thread)[0].text == "see [url] or mail [email] now"
    kept = CleaningOptions(replace_urls=False, replace_emails=False)
    assert parse_thread(thread, kept)[0].text == "see https://shop.example.com/item?id=3 or mail a.b@c.org now"


def test_lowercase_only_when_asked():
    assert parse_thread("BUYER: Hello THERE")[0].text == "Hello THERE"
    assert parse_thread("BUYER: Hello THERE", LOWER)[0].text == "hello there"


@pytest.mark.parametrize("cell", [None, "", "   \n\t", float("nan"), b"", "<br><br>"])
def test_empty_or_missing_threads_give_no_messages(cell):
    assert parse_thread(cell) == []


def test_bytes_and_lone_surrogates_are_repaired():
    assert parse_thread(b"caf\xc3\xa9 \xff ok")[0].text == "café \ufffd ok"
    assert parse_thread("bad \ud800 char")[0].text == "bad ? char"


def test_several_text_columns_are_separate_segments():
    messages = parse_segments(["Great dress", "Fits well.\nWould buy again"])
    assert [m.text for m in messages] == ["Great dress", "Fits well.", "Would buy again"]


def test_render_prefixes_role():
    assert Message("buyer", "hi").render() == "buyer: hi"
    assert Message("buyer", "hi").render(with_role=False) == "hi"
    assert Message(None, "hi").render() == "hi"
