use super::*;

fn store(dir: &Path) -> Store {
    Store::open(dir, Arc::new(discard_tree)).unwrap()
}

#[test]
fn commit_lists_and_remove_unlists() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store(tmp.path());
    let st = s.begin("a", None).unwrap();
    fs::create_dir(&st.path).unwrap();
    fs::write(st.path.join("f"), b"x").unwrap();
    s.commit(st, LayerMeta::of(LayerInfo { size: 1, ..Default::default() })).unwrap();
    assert_eq!(s.list().unwrap().len(), 1);
    assert!(s.layer_dir("a").join("f").exists());
    assert!(matches!(s.begin("a", None).unwrap_err().cause, Cause::Exists));
    assert!(matches!(s.begin("b", Some("zz")).unwrap_err().cause, Cause::ParentNotFound(_)));
    let st = s.begin("b", Some("a")).unwrap();
    fs::create_dir(&st.path).unwrap();
    s.commit(st, LayerMeta::default()).unwrap();
    assert!(matches!(s.remove("a", |_| Ok(())).unwrap_err().cause, Cause::HasChildren(_)));
    s.remove("b", |_| Ok(())).unwrap();
    s.remove("a", |_| Ok(())).unwrap();
    assert!(s.list().unwrap().is_empty());
    assert_eq!(fs::read_dir(tmp.path().join("staging")).unwrap().count(), 0);
}

#[test]
fn dropped_staging_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store(tmp.path());
    let st = s.begin("a", None).unwrap();
    fs::create_dir(&st.path).unwrap();
    drop(st);
    assert_eq!(fs::read_dir(tmp.path().join("staging")).unwrap().count(), 0);
    assert!(s.list().unwrap().is_empty());
}

#[test]
fn recovery_discards_dead_work_and_orphans() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store(tmp.path());
    // What a killed process leaves: a staging dir and lock nobody holds, content
    // without metadata, metadata without content, a temp file.
    fs::create_dir_all(tmp.path().join("staging/123-0-0/x")).unwrap();
    fs::write(tmp.path().join("staging/123-0-0.lock"), b"").unwrap();
    fs::create_dir_all(tmp.path().join("layers/orphan/x")).unwrap();
    fs::write(
        tmp.path().join("meta/ghost.json"),
        br#"{"id":"ghost","parent":null,"writable":false,"diff_id":null,"size":0,"mounts":0,"created":0}"#,
    )
    .unwrap();
    fs::write(tmp.path().join("meta/.tmp-1"), b"{").unwrap();
    // A live staging entry (its lock held) must survive.
    let live = s.begin("live", None).unwrap();
    fs::create_dir(&live.path).unwrap();
    let s2 = store(tmp.path());
    assert!(s2.list().unwrap().is_empty());
    assert!(!tmp.path().join("layers/orphan").exists());
    assert!(!tmp.path().join("staging/123-0-0").exists());
    assert!(!tmp.path().join("meta/.tmp-1").exists());
    assert!(live.path.exists());
    drop(live);
}

#[test]
fn leftovers_that_cannot_be_discarded_do_not_stop_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir_all(tmp.path().join("staging/rm-1-0-0/x")).unwrap();
    fs::create_dir_all(tmp.path().join("layers/orphan/x")).unwrap();
    let failing: Discard = Arc::new(|_| Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG)));
    let s = Store::open(tmp.path(), failing.clone()).expect("the store opens");
    assert!(s.list().unwrap().is_empty());
    let st = s.begin("a", None).unwrap();
    fs::create_dir(&st.path).unwrap();
    s.commit(st, LayerMeta::default()).unwrap();
    assert_eq!(Store::open(tmp.path(), failing).unwrap().list().unwrap().len(), 1);
    // Once it can be discarded, the next start does.
    store(tmp.path());
    assert!(!tmp.path().join("staging/rm-1-0-0").exists() && !tmp.path().join("layers/orphan").exists());
}

/// Every state a crash can leave of a chain of three layers listed with one sync and
/// one seal (the renames of content and records reached the disk in any subset):
/// recovery lists a prefix of the chain, each layer with its content, and nothing else.
#[test]
fn recovery_after_a_crash_mid_chain_lists_a_whole_prefix() {
    let ids = ["a", "b", "c"];
    // 6 renames: content then record, per layer; each kept or lost.
    for kept in 0u32..64 {
        let tmp = tempfile::tempdir().unwrap();
        let s = store(tmp.path());
        let mut staged = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let parent = i.checked_sub(1).map(|p| ids[p]);
            let mut st = s.begin_before_parent(id, parent).unwrap();
            fs::create_dir(&st.path).unwrap();
            fs::write(st.path.join("f"), id).unwrap();
            s.prepare(&mut st, LayerMeta::default()).unwrap();
            staged.push(st);
        }
        s.sync("a").unwrap();
        // What reached the disk: the renames `kept` names, done by hand.
        for (i, st) in staged.iter_mut().enumerate() {
            if kept & (1 << (2 * i)) != 0 {
                fs::rename(&st.path, s.layer_dir(&st.id)).unwrap();
            }
            if kept & (1 << (2 * i + 1)) != 0 {
                fs::rename(st.record_path(), s.meta_path(&st.id)).unwrap();
            }
            // The process died: nothing of its own is cleaned up.
            st.done = true;
            st.lock_path = PathBuf::new();
        }
        drop(staged);
        let s = store(tmp.path());
        let listed: Vec<String> = s.list().unwrap().into_iter().map(|m| m.layer.id).collect();
        let prefix = ids.iter().take_while(|id| {
            let i = ids.iter().position(|x| x == *id).unwrap();
            kept & (3 << (2 * i)) == 3 << (2 * i)
        });
        assert_eq!(listed, prefix.map(|s| s.to_string()).collect::<Vec<_>>(), "renames kept {kept:06b}");
        for id in &listed {
            assert_eq!(fs::read_to_string(s.layer_dir(id).join("f")).unwrap(), *id, "{kept:06b}");
        }
        let mut left: Vec<String> = fs::read_dir(tmp.path().join("layers"))
            .unwrap()
            .chain(fs::read_dir(tmp.path().join("staging")).unwrap())
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, listed, "only listed layers left ({kept:06b})");
    }
}

#[test]
fn a_chain_listed_with_one_sync_and_one_seal() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store(tmp.path());
    let mut a = s.begin("a", None).unwrap();
    let mut b = s.begin_before_parent("b", Some("a")).unwrap();
    for st in [&a, &b] {
        fs::create_dir(&st.path).unwrap();
    }
    s.prepare(&mut a, LayerMeta::of(LayerInfo { size: 7, ..Default::default() })).unwrap();
    s.prepare(&mut b, LayerMeta::default()).unwrap();
    s.sync("a").unwrap();
    // Listed bottom to top: a child before its parent is refused.
    let b_path = b.path.clone();
    assert!(matches!(s.list_prepared(b).unwrap_err().cause, Cause::ParentNotFound(_)));
    assert!(!b_path.exists(), "the refused layer's staging is dropped");
    s.list_prepared(a).unwrap();
    s.seal().unwrap();
    let got = s.get("a").unwrap();
    assert_eq!((got.size, got.parent.clone(), got.created > 0), (7, None, true));
    assert_eq!(fs::read_dir(tmp.path().join("staging")).unwrap().count(), 0);
}

/// A record is one flat JSON object, as the store wrote it when LayerMeta had its
/// own copy of LayerInfo's fields: records of older stores read back whole.
#[test]
fn a_record_is_one_flat_object() {
    let flat = r#"{"id":"a","parent":"p","writable":true,"diff_id":"sha256:00","size":3,"mounts":1,"created":9,"extra":{"link":"L"}}"#;
    let m: LayerMeta = serde_json::from_str(flat).unwrap();
    assert_eq!((m.id.as_str(), m.parent.as_deref(), m.writable, m.size, m.mounts), ("a", Some("p"), true, 3, 1));
    assert_eq!((m.diff_id.as_deref(), m.created, m.extra["link"].as_str()), (Some("sha256:00"), 9, Some("L")));
    assert_eq!(serde_json::to_string(&m).unwrap(), flat);
    let bare: LayerMeta = serde_json::from_str(
        r#"{"id":"b","parent":null,"writable":false,"diff_id":null,"size":0,"mounts":0,"created":1}"#,
    )
    .unwrap();
    assert!(bare.extra.is_empty() && bare.parent.is_none() && bare.diff_id.is_none());
}

/// A record that reads empty (a power cut under `--sync none`) hides no other layer, is
/// listed raw as the error it is, and can be removed, content and content record with it.
#[test]
fn an_empty_record_is_skipped_by_the_listing_and_can_be_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store(tmp.path());
    for id in ["a", "b"] {
        let st = s.begin(id, None).unwrap();
        fs::create_dir(&st.path).unwrap();
        s.commit(st, LayerMeta::default()).unwrap();
    }
    fs::write(s.files_path("b"), b"{}").unwrap();
    fs::write(s.meta_path("b"), b"").unwrap();
    let listed: Vec<String> = s.list().unwrap().into_iter().map(|m| m.layer.id).collect();
    assert_eq!(listed, ["a"]);
    let raw = s.list_raw().unwrap();
    assert!(matches!(&raw[1], (id, Err(e)) if id == "b" && matches!(e.cause, Cause::Corrupt(_))));
    s.remove("b", |m| {
        assert_eq!((m.id.as_str(), m.writable, m.mounts), ("b", false, 0));
        Ok(())
    })
    .unwrap();
    assert!(!s.layer_dir("b").exists() && !s.files_path("b").exists() && !s.meta_path("b").exists());
    assert_eq!(s.list_raw().unwrap().len(), 1);
}

#[test]
fn rejects_unsafe_ids() {
    for bad in ["", "../x", "a/b", ".hidden", "a b", &"x".repeat(129)] {
        assert!(validate_id(bad).is_err(), "{bad:?}");
    }
    validate_id("sha256:0123abc").unwrap();
}
