use super::*;
use crate::testdriver::with_record;

/// A torn image record is a problem of the check (not its failure), its line made
/// from the typed error: the field that does not parse, where serde's words alone
/// named none. An empty one says so.
#[test]
fn a_torn_image_record_is_a_problem_naming_its_field() {
    let (_dir, driver, images, torn) = with_record(br#"{"name": "a", "layers": 5}"#);
    let empty = images.dir().join("4567.json");
    fs::write(&empty, b"").unwrap();
    let report = check(&driver, &images).unwrap();
    assert_eq!(report.images, 2);
    let [torn_p, empty_p] = &report.problems[..] else { panic!("{:?}", report.problems) };
    assert_eq!((torn_p.kind, torn_p.subject.as_str()), (Kind::Image, torn.to_str().unwrap()));
    assert!(torn_p.what.starts_with("record unreadable: layers: invalid type: integer `5`"), "{torn_p}");
    assert_eq!((empty_p.kind, empty_p.subject.as_str()), (Kind::Image, empty.to_str().unwrap()));
    assert_eq!(empty_p.what, "record empty");
}
