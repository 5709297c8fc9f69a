from sohoa.fields import extract_fields, type_code

DECISION = """UBND TỈNH HÀ NAM
CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM
SỞ GIÁO DỤC VÀ ĐÀO TẠO
Độc lập - Tự do - Hạnh phúc
Số: 123/QĐ-SGDĐT
Hà Nam, ngày 05 tháng 01 năm 2024
QUYẾT ĐỊNH
Về việc công nhận tốt nghiệp trung học phổ thông năm 2023
GIÁM ĐỐC SỞ GIÁO DỤC VÀ ĐÀO TẠO
Nơi nhận:
KT. GIÁM ĐỐC
PHÓ GIÁM ĐỐC
Trần Thị Bình
"""


def test_decision_fields():
    fields = extract_fields(DECISION, [0.95] * 10)
    assert fields["TypeName"].value == "Quyết định"
    assert fields["CodeNumber"].value == "123"
    assert fields["CodeNotation"].value == "QĐ-SGDĐT"
    assert fields["IssuedDate"].value == "2024-01-05"
    assert fields["OrganName"].value == "SỞ GIÁO DỤC VÀ ĐÀO TẠO"
    assert fields["Subject"].value.startswith("Về việc công nhận tốt nghiệp")
    assert fields["FullName"].value == "Trần Thị Bình"
    assert type_code(fields) == "QĐ"


def test_missing_fields_marked_unsure_not_invented():
    fields = extract_fields("một dòng chữ không có thông tin\n", [0.99])
    for name in ("TypeName", "CodeNumber", "CodeNotation", "IssuedDate", "OrganName", "FullName"):
        assert fields[name].value is None, name
        assert fields[name].sure is False, name
    assert type_code(fields) == "KHAC"


def test_impossible_date_not_reported():
    text = DECISION.replace("ngày 05 tháng 01", "ngày 31 tháng 02")
    fields = extract_fields(text)
    assert fields["IssuedDate"].value is None


def test_low_confidence_text_gives_unsure_fields():
    fields = extract_fields(DECISION, [0.4] * 10)
    assert fields["CodeNumber"].value == "123"
    assert fields["CodeNumber"].sure is False


def test_owner_identity_number():
    text = "BẢN SAO BẰNG TỐT NGHIỆP\nHọ và tên: Lê Văn Cường\nSố định danh cá nhân: 035204001234\n"
    fields = extract_fields(text, [0.95])
    assert fields["OwnerName"].value == "Lê Văn Cường"
    assert fields["OwnerIdentity"].value == "035204001234"
    assert type_code(fields) == "VB"


def test_cited_number_not_taken_as_own():
    text = "QUYẾT ĐỊNH\nCăn cứ Quyết định số 25/2021/QĐ-UBND ngày 20 tháng 8 năm 2021;\nsố 30/2022/TT-BGDĐT của Bộ\n"
    fields = extract_fields(text, [0.95])
    assert fields["CodeNumber"].value is None
    assert fields["CodeNotation"].value is None
