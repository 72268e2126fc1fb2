//! The data-access layer against both databases. Every test runs twice: on a fresh SQLite
//! file and on a fresh database of the real Postgres server the test script starts
//! (`MEDPO_TEST_POSTGRES_URL`, an admin URL such as `postgres://postgres@127.0.0.1:5439/postgres`).
//! Without that variable the Postgres half is skipped with a message, unless
//! `MEDPO_REQUIRE_POSTGRES=1` (set by `scripts/test.sh`), which makes it fail instead.

use medpo_store::{ConnectSettings, Error, Store};
use medpo_types::*;

async fn sqlite_store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    (Store::open(&url, &ConnectSettings::default()).await.unwrap(), dir)
}

async fn postgres_store() -> Option<Store> {
    let Ok(admin) = std::env::var("MEDPO_TEST_POSTGRES_URL") else {
        if std::env::var("MEDPO_REQUIRE_POSTGRES").as_deref() == Ok("1") {
            panic!("MEDPO_REQUIRE_POSTGRES=1 but MEDPO_TEST_POSTGRES_URL is not set");
        }
        eprintln!("skipping the Postgres half: MEDPO_TEST_POSTGRES_URL is not set (scripts/test.sh sets it)");
        return None;
    };
    let name = format!("medpo_test_{}", rand::random::<u64>());
    let admin_store = Store::connect(&admin, &ConnectSettings::default()).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(admin_store.pool()).await.unwrap();
    admin_store.close().await;
    let (base, _) = admin.rsplit_once('/').unwrap();
    Some(Store::open(&format!("{base}/{name}"), &ConnectSettings::default()).await.unwrap())
}

macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                let (s, _dir) = super::sqlite_store().await;
                super::$name(&s).await;
            }
            #[tokio::test]
            async fn postgres() {
                if let Some(s) = super::postgres_store().await {
                    super::$name(&s).await;
                }
            }
        }
    };
}

async fn model(s: &Store, name: &str, variant: &str, parent: Option<i64>) -> ModelEntry {
    s.register_model(&NewModel {
        name: name.into(),
        base: "llava-med-v1.5-mistral-7b".into(),
        variant: variant.into(),
        layout: "llava_mistral".into(),
        parent_id: parent,
        path: format!("/models/{name}"),
        files: vec!["config.json".into(), "model.safetensors".into()],
        card: "# card".into(),
        params: Some(7_000_000_000),
    })
    .await
    .unwrap()
}

fn sha(n: u8) -> String {
    format!("{:064x}", n)
}

async fn scan(s: &Store, n: u8) -> Scan {
    s.insert_scan(&NewScan {
        sha256: sha(n),
        path: format!("scans/{}.png", sha(n)),
        size_bytes: 1234,
        width: 70,
        height: 50,
        source_format: SourceFormat::Png,
        modality: Some("CT".into()),
        body_part: None,
        view: None,
        uploaded_by: None,
    })
    .await
    .unwrap()
    .0
}

fn answer(model_id: i64, text: &str) -> NewAnswer {
    NewAnswer { model_id, text: text.into(), settings: GenerationSettings::default(), latency_ms: Some(12), error: None }
}

async fn migrations_and_pragmas(s: &Store) {
    // Running the migrations again is a no-op.
    s.migrate().await.unwrap();
    s.ping().await.unwrap();
    if s.backend() == medpo_store::Backend::Sqlite {
        assert_eq!(s.sqlite_journal_mode().await.unwrap().as_deref(), Some("wal"));
        assert_eq!(s.sqlite_foreign_keys().await.unwrap(), Some(true));
    }
    assert_eq!(s.overview().await.unwrap(), Overview::default());
}
both!(migrations_and_pragmas);

async fn users_and_sessions(s: &Store) {
    let u = s.create_user("alice", "$argon2id$fake", Role::Clinician).await.unwrap();
    assert_eq!(u.role, Role::Clinician);
    let dup = s.create_user("alice", "x", Role::Viewer).await.unwrap_err();
    assert!(dup.is_conflict(), "{dup}");
    assert!(dup.to_string().contains("alice"));
    let (found, hash) = s.user_with_hash("alice").await.unwrap().unwrap();
    assert_eq!(found, u);
    assert_eq!(hash, "$argon2id$fake");
    assert!(s.user_with_hash("bob").await.unwrap().is_none());

    s.create_session("tok1", u.id, "csrf1", 60_000).await.unwrap();
    let info = s.session("tok1").await.unwrap().unwrap();
    assert_eq!(info.user.username, "alice");
    assert_eq!(info.csrf_token, "csrf1");
    s.delete_session("tok1").await.unwrap();
    s.create_session("tok1", u.id, "csrf1", 60_000).await.unwrap();
    // An expired session is not returned and is purged.
    s.create_session("tok2", u.id, "csrf2", -1).await.unwrap();
    assert!(s.session("tok2").await.unwrap().is_none());
    assert_eq!(s.purge_expired_sessions().await.unwrap(), 1);
    s.create_session("tok3", u.id, "csrf3", 60_000).await.unwrap();
    s.set_password_hash("alice", "$argon2id$new").await.unwrap();
    assert!(s.session("tok3").await.unwrap().is_none(), "a password change ends sessions");
    assert!(s.set_password_hash("nobody", "x").await.is_err());
    s.delete_session("tok1").await.unwrap();
    assert!(s.session("tok1").await.unwrap().is_none());
    assert!(matches!(s.create_user("  ", "x", Role::Viewer).await, Err(Error::Invalid { field: "username", .. })));
}
both!(users_and_sessions);

async fn api_keys_and_call_log(s: &Store) {
    use medpo_store::api_keys::ApiCall;
    let u = s.create_user("script", "x", Role::Researcher).await.unwrap();
    let other = s.create_user("other", "x", Role::Clinician).await.unwrap();
    let k = s.create_api_key(u.id, "notebook", "mpo_12345678", &"a".repeat(64)).await.unwrap();
    assert_eq!((k.name.as_str(), k.last_used_at, k.revoked_at), ("notebook", None, None));
    let dup = s.create_api_key(other.id, "x", "mpo_12345678", &"a".repeat(64)).await.unwrap_err();
    assert!(dup.is_conflict(), "{dup}");
    assert!(matches!(s.create_api_key(u.id, " ", "p", "h").await, Err(Error::Invalid { .. })));
    let (found, owner) = s.active_api_key(&"a".repeat(64)).await.unwrap().unwrap();
    assert_eq!((found.id, owner.username.as_str(), owner.role), (k.id, "script", Role::Researcher));
    assert!(s.active_api_key(&"b".repeat(64)).await.unwrap().is_none());
    let call = ApiCall {
        key_id: k.id,
        endpoint: "/v1/chat/completions".into(),
        model: Some("m".into()),
        status: 200,
        prompt_tokens: Some(40),
        completion_tokens: Some(7),
        latency_ms: 12,
        error: None,
    };
    s.log_api_call(&call).await.unwrap();
    assert_eq!(s.api_calls_of(k.id, 10).await.unwrap(), vec![call]);
    assert!(s.api_keys_of(u.id).await.unwrap()[0].last_used_at.is_some());
    // Only the owner (or an admin, with None) revokes; revoked keys stop authenticating.
    assert!(matches!(s.revoke_api_key(k.id, Some(other.id)).await, Err(Error::NotFound { .. })));
    let r = s.revoke_api_key(k.id, Some(u.id)).await.unwrap();
    assert!(r.revoked_at.is_some());
    assert_eq!(s.revoke_api_key(k.id, None).await.unwrap().revoked_at, r.revoked_at, "revoking twice keeps the first time");
    assert!(s.active_api_key(&"a".repeat(64)).await.unwrap().is_none());
    assert_eq!(s.api_keys_of(u.id).await.unwrap().len(), 1);
}
both!(api_keys_and_call_log);

async fn remotes_registry(s: &Store) {
    let r = RemoteEndpoint {
        id: 0,
        name: "gpu1".into(),
        base_url: "http://gpu1:8000/v1".into(),
        api_key_env: Some("GPU1_KEY".into()),
        models: vec!["llava-med-7b".into(), "llava-med-dpo".into()],
        timeout_s: 30,
        max_concurrency: 2,
        created_at: 0,
    };
    let stored = s.create_remote(&r, None).await.unwrap();
    assert!(stored.id > 0 && stored.created_at > 0);
    assert_eq!(stored.models, r.models);
    assert_eq!(s.remote_named("gpu1").await.unwrap(), Some(stored.clone()));
    assert!(s.remote_named("gpu2").await.unwrap().is_none());
    let dup = s.create_remote(&r, None).await.unwrap_err();
    assert!(dup.is_conflict() && dup.to_string().contains("gpu1"), "{dup}");
    assert_eq!(s.list_remotes().await.unwrap(), vec![stored]);
}
both!(remotes_registry);

async fn models_registry(s: &Store) {
    let sft = model(s, "llava-med-sft", "sft", None).await;
    let dpo = model(s, "llava-med-dpo", "dpo", Some(sft.id)).await;
    assert_eq!(dpo.parent_id, Some(sft.id));
    assert_eq!(dpo.files, vec!["config.json", "model.safetensors"]);
    let list = s.list_models().await.unwrap();
    assert_eq!(list.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(), ["llava-med-sft", "llava-med-dpo"]);
    let err = s
        .register_model(&NewModel { name: "llava-med-sft".into(), ..list[0].clone().into_new() })
        .await
        .unwrap_err();
    assert!(err.is_conflict());
    let err = s.register_model(&NewModel { parent_id: Some(999), name: "x".into(), ..list[0].clone().into_new() }).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    // Names sort bytewise on both databases (upper case before lower case).
    model(s, "alpha", "dpo", Some(sft.id)).await;
    model(s, "Zeta", "dpo", Some(sft.id)).await;
    let names: Vec<String> = s.list_models().await.unwrap().into_iter().map(|m| m.name).collect();
    assert_eq!(names, ["llava-med-sft", "Zeta", "alpha", "llava-med-dpo"]);
    s.set_model_enabled(dpo.id, false).await.unwrap();
    assert!(!s.model(dpo.id).await.unwrap().enabled);
    assert_eq!(s.model_by_name("llava-med-dpo").await.unwrap().unwrap().id, dpo.id);
}
both!(models_registry);

trait IntoNew {
    fn into_new(self) -> NewModel;
}
impl IntoNew for ModelEntry {
    fn into_new(self) -> NewModel {
        NewModel {
            name: self.name,
            base: self.base,
            variant: self.variant,
            layout: self.layout,
            parent_id: self.parent_id,
            path: self.path,
            files: self.files,
            card: self.card,
            params: self.params,
        }
    }
}

async fn scans_are_content_addressed(s: &Store) {
    let a = scan(s, 1).await;
    let (again, new) = s
        .insert_scan(&NewScan {
            sha256: sha(1),
            path: "elsewhere".into(),
            size_bytes: 1,
            width: 1,
            height: 1,
            source_format: SourceFormat::Jpeg,
            modality: None,
            body_part: None,
            view: None,
            uploaded_by: None,
        })
        .await
        .unwrap();
    assert!(!new);
    assert_eq!(again, a);
    assert_eq!(s.overview().await.unwrap().scans, 1);
    let bad = s.insert_scan(&NewScan { sha256: "abc".into(), ..NewScanExt::from_scan(&a) }).await.unwrap_err();
    assert!(bad.to_string().contains("abc"));
}
both!(scans_are_content_addressed);

struct NewScanExt;
impl NewScanExt {
    fn from_scan(a: &Scan) -> NewScan {
        NewScan {
            sha256: a.sha256.clone(),
            path: a.path.clone(),
            size_bytes: a.size_bytes,
            width: a.width,
            height: a.height,
            source_format: a.source_format,
            modality: a.modality.clone(),
            body_part: a.body_part.clone(),
            view: a.view.clone(),
            uploaded_by: a.uploaded_by,
        }
    }
}

async fn votes_make_pairs_atomically(s: &Store) {
    let rater = s.create_user("rad", "h", Role::Clinician).await.unwrap();
    let sft = model(s, "sft", "sft", None).await;
    let dpo = model(s, "dpo", "dpo", Some(sft.id)).await;
    let sc = scan(s, 2).await;
    let c = s
        .create_comparison(sc.id, "Is there a nodule?", true, Some(rater.id), &[answer(sft.id, "No."), answer(dpo.id, "Yes, right upper lobe.")])
        .await
        .unwrap();
    assert_eq!(c.answers.len(), 2);
    assert!(c.blind);
    let (a, b) = (c.answers[0].id, c.answers[1].id);

    // both_bad without a corrected answer: rejected, nothing written.
    let mut v = NewVote {
        comparison_id: c.id,
        rater_id: rater.id,
        answer_a_id: a,
        answer_b_id: b,
        winner: Winner::BothBad,
        rationale: "neither sees it".into(),
        corrected_answer: None,
        region: Some(Region { x: 10.0, y: 5.0, w: 20.0, h: 10.0 }),
        blind: true,
        tags: vec![ErrorTag { answer_id: Some(a), tag: "missed_finding".into(), severity: Severity::Major }],
    };
    assert!(matches!(s.record_vote(&v).await, Err(Error::Invalid { field: "corrected_answer", .. })));
    // An unknown tag: rejected, nothing written.
    v.corrected_answer = Some("A 1 cm nodule in the right upper lobe.".into());
    v.tags.push(ErrorTag { answer_id: None, tag: "made_up".into(), severity: Severity::Minor });
    assert!(s.record_vote(&v).await.unwrap_err().to_string().contains("made_up"));
    assert_eq!(s.overview().await.unwrap().votes, 0);
    v.tags.pop();

    let stored = s.record_vote(&v).await.unwrap();
    assert_eq!(stored.winner, Winner::BothBad);
    assert_eq!(stored.tags.len(), 1);
    assert_eq!(stored.tags[0].severity, Severity::Major);
    assert_eq!(stored.region, v.region);
    let pairs = s.preference_pairs(10).await.unwrap();
    assert_eq!(pairs.len(), 2);
    assert!(pairs.iter().all(|p| p.chosen.starts_with("A 1 cm") && p.vote_id == Some(stored.id)));
    assert_eq!(pairs[0].tags, vec!["missed_finding"]);

    // A plain win (another rater: one vote per rater and comparison): the winner's answer is chosen.
    let rater2 = s.create_user("rad-b", "h", Role::Clinician).await.unwrap();
    let rater3 = s.create_user("rad-c", "h", Role::Clinician).await.unwrap();
    let v2 = NewVote { rater_id: rater2.id, winner: Winner::B, corrected_answer: None, tags: vec![], region: None, ..v.clone() };
    s.record_vote(&v2).await.unwrap();
    let p = &s.preference_pairs(1).await.unwrap()[0];
    assert_eq!((p.chosen.as_str(), p.rejected.as_str()), ("Yes, right upper lobe.", "No."));
    assert_eq!(p.chosen_model_id, Some(dpo.id));
    // A tie gives no pair.
    s.record_vote(&NewVote { rater_id: rater3.id, winner: Winner::Tie, ..v2.clone() }).await.unwrap();
    assert_eq!(s.overview().await.unwrap().pairs, 3);

    assert_eq!(s.vote_outcomes(None).await.unwrap().len(), 3);
    let outcomes = s.vote_outcomes(Some(rater2.id)).await.unwrap();
    assert_eq!(outcomes.len(), 1);
    assert_eq!((outcomes[0].model_a.as_str(), outcomes[0].model_b.as_str(), outcomes[0].winner), ("sft", "dpo", Winner::B));
    assert!(s.vote_outcomes(Some(rater.id + 100)).await.unwrap().is_empty());

    // An answer from another comparison is refused.
    let c2 = s.create_comparison(sc.id, "Other?", false, None, &[answer(sft.id, "x"), answer(dpo.id, "y")]).await.unwrap();
    let err = s.record_vote(&NewVote { answer_b_id: c2.answers[0].id, ..v2.clone() }).await.unwrap_err();
    assert!(err.to_string().contains("not part of comparison"), "{err}");
    // A comparison against a missing scan or model is refused.
    assert!(s.create_comparison(9999, "q", false, None, &[answer(sft.id, "x")]).await.is_err());
    assert!(s.create_comparison(sc.id, "q", false, None, &[answer(9999, "x")]).await.is_err());
    assert_eq!(s.overview().await.unwrap().comparisons, 2);
    let recent = s.recent_comparisons(10).await.unwrap();
    assert_eq!(recent.len(), 2);
    assert_eq!((recent[1].models.clone(), recent[1].votes), (vec!["sft".to_string(), "dpo".to_string()], 3));
}
both!(votes_make_pairs_atomically);

async fn arena_sampling_and_history(s: &Store) {
    let rater = s.create_user("rad2", "h", Role::Clinician).await.unwrap();
    let sft = model(s, "sft", "sft", None).await;
    let dpo = model(s, "dpo", "dpo", Some(sft.id)).await;
    let sc = scan(s, 3).await;
    let sample = medpo_types::PairSample { model_a_id: dpo.id, model_b_id: sft.id, pair_votes: 0, candidates: 1, probability: 1.0 };
    let c = s
        .create_comparison_drawn(sc.id, "Which side?", true, Some(rater.id), &[answer(dpo.id, "Left."), answer(sft.id, "Right.")], Some(&sample))
        .await
        .unwrap();
    assert_eq!(s.pair_sample(c.id).await.unwrap(), Some(sample));
    assert!(s.pair_vote_counts().await.unwrap().is_empty());
    assert!(!s.has_voted(rater.id, c.id).await.unwrap());
    let v = NewVote {
        comparison_id: c.id,
        rater_id: rater.id,
        answer_a_id: c.answers[0].id,
        answer_b_id: c.answers[1].id,
        winner: Winner::A,
        rationale: String::new(),
        corrected_answer: None,
        region: Some(Region { x: 1.0, y: 2.0, w: 3.0, h: 4.0 }),
        blind: true,
        tags: vec![ErrorTag { answer_id: Some(c.answers[1].id), tag: "laterality_location".into(), severity: Severity::Critical }],
    };
    s.record_vote(&v).await.unwrap();
    assert!(s.has_voted(rater.id, c.id).await.unwrap());
    // One vote per rater and comparison, even when the check above is raced.
    let again = s.record_vote(&NewVote { winner: Winner::B, ..v.clone() }).await.unwrap_err();
    assert!(again.is_conflict(), "{again}");
    // Counted once per unordered pair, whichever side each model was on.
    let (lo, hi) = (sft.id.min(dpo.id), sft.id.max(dpo.id));
    assert_eq!(s.pair_vote_counts().await.unwrap(), vec![(lo, hi, 1)]);
    let h = s.rater_history(rater.id, 10).await.unwrap();
    assert_eq!(h.len(), 1);
    assert_eq!((h[0].model_a.as_str(), h[0].model_b.as_str(), h[0].winner, h[0].tags, h[0].has_region), ("dpo", "sft", Winner::A, 1, true));
    assert_eq!(h[0].question, "Which side?");
    assert!(s.rater_history(rater.id + 1, 10).await.unwrap().is_empty());
}
both!(arena_sampling_and_history);

async fn datasets_snapshots(s: &Store) {
    let d = s.create_dataset("radiology-v1", "first pass", None).await.unwrap();
    assert!(s.create_dataset("radiology-v1", "", None).await.unwrap_err().is_conflict());
    // No pairs yet: a clear message.
    let e = s.snapshot_dataset(d.id, "", None).await.unwrap_err();
    assert!(e.to_string().contains("no preference pairs"), "{e}");
    s.import_pair(&medpo_store::datasets::ImportedPair {
        scan_id: None,
        question: "q1".into(),
        chosen: "good".into(),
        rejected: "bad".into(),
        region: None,
    })
    .await
    .unwrap();
    let v1 = s.snapshot_dataset(d.id, "one pair", None).await.unwrap();
    assert_eq!((v1.version, v1.pair_count), (1, 1));
    s.import_pair(&medpo_store::datasets::ImportedPair {
        scan_id: None,
        question: "q2".into(),
        chosen: "g".into(),
        rejected: "b".into(),
        region: None,
    })
    .await
    .unwrap();
    let v2 = s.snapshot_dataset(d.id, "", None).await.unwrap();
    assert_eq!((v2.version, v2.pair_count), (2, 2));
    assert_ne!(v1.sha256, v2.sha256);
    // v1 is frozen.
    assert_eq!(s.snapshot_pairs(v1.id).await.unwrap().len(), 1);
    assert_eq!(s.snapshot_pairs(v2.id).await.unwrap().len(), 2);
    let list = s.list_datasets().await.unwrap();
    assert_eq!(list[0].snapshots.iter().map(|x| x.version).collect::<Vec<_>>(), [2, 1]);
    assert!(matches!(s.snapshot_dataset(999, "", None).await, Err(Error::NotFound { .. })));
}
both!(datasets_snapshots);

/// An uploaded file becomes a snapshot of exactly its pairs (atomically); those pairs stay out
/// of vote snapshots; the browser's details carry rater, modality, models and severity.
async fn uploaded_snapshots(s: &Store) {
    use medpo_store::datasets::ImportedPair;
    let d = s.create_dataset("uploads", "", None).await.unwrap();
    let pair = |q: &str, c: &str| ImportedPair { scan_id: None, question: q.into(), chosen: c.into(), rejected: "no".into(), region: None };
    let bad = s.upload_snapshot(d.id, &[pair("q1", "yes"), pair("q2", " ")], "", None).await.unwrap_err();
    assert!(bad.to_string().contains("pair 2"), "{bad}");
    assert!(s.preference_pairs(10).await.unwrap().is_empty(), "a refused upload stores nothing");
    let up = s.upload_snapshot(d.id, &[pair("q1", "yes"), pair("q2", "maybe")], "seed file", None).await.unwrap();
    assert_eq!((up.version, up.pair_count, up.origin.as_str()), (1, 2, "upload"));
    let details = s.snapshot_details(up.id).await.unwrap();
    assert_eq!(details.len(), 2);
    assert_eq!((details[0].rater.as_deref(), details[0].severity.as_deref()), (None, None));
    // A vote snapshot afterwards does not take the uploaded pairs.
    s.import_pair(&pair("q3", "loose")).await.unwrap();
    let votes = s.create_dataset("votes", "", None).await.unwrap();
    let snap = s.snapshot_dataset(votes.id, "", None).await.unwrap();
    assert_eq!((snap.pair_count, snap.origin.as_str()), (1, "votes"));
    assert_eq!(s.snapshot_pairs(snap.id).await.unwrap()[0].question, "q3");
    assert!(matches!(s.upload_snapshot(999, &[pair("q", "a")], "", None).await, Err(Error::NotFound { .. })));
}
both!(uploaded_snapshots);

async fn jobs_lifecycle(s: &Store) {
    let sft = model(s, "base", "sft", None).await;
    let j = s
        .create_job(&NewTrainingJob {
            name: "dpo run".into(),
            objective: "sigmoid".into(),
            config: serde_json::json!({"beta": 0.1}),
            base_model_id: sft.id,
            snapshot_id: None,
            device: "cpu".into(),
            total_steps: 10,
            created_by: None,
        })
        .await
        .unwrap();
    assert_eq!(j.status, JobStatus::Queued);
    s.start_job(j.id).await.unwrap();
    assert!(s.start_job(j.id).await.is_err(), "a running job cannot start twice");
    for step in 1..=3 {
        s.record_step(j.id, step, &serde_json::json!({"loss": 0.69 / step as f64})).await.unwrap();
    }
    assert_eq!(s.job(j.id).await.unwrap().step, 3);
    let m = s.job_metrics(j.id, 1).await.unwrap();
    assert_eq!(m.iter().map(|r| r.step).collect::<Vec<_>>(), [2, 3]);
    let out = model(s, "base-dpo", "dpo", Some(sft.id)).await;
    s.finish_job(j.id, JobStatus::Succeeded, None, Some(out.id)).await.unwrap();
    let done = s.job(j.id).await.unwrap();
    assert_eq!((done.status, done.result_model_id), (JobStatus::Succeeded, Some(out.id)));
    assert!(s.finish_job(j.id, JobStatus::Failed, Some("x"), None).await.is_err());
    assert!(s.finish_job(j.id, JobStatus::Running, None, None).await.is_err());
    assert_eq!(s.list_jobs().await.unwrap().len(), 1);
}
both!(jobs_lifecycle);

fn queued_job(name: &str, base: i64, device: &str) -> NewTrainingJob {
    NewTrainingJob {
        name: name.into(),
        objective: "sigmoid".into(),
        config: serde_json::json!({}),
        base_model_id: base,
        snapshot_id: None,
        device: device.into(),
        total_steps: 4,
        created_by: None,
    }
}

/// The persistent queue: oldest first, one running job per device, cancel of queued and
/// running jobs, and a restart putting running jobs back in the queue.
async fn job_queue(s: &Store) {
    let sft = model(s, "base", "sft", None).await;
    let a = s.create_job(&queued_job("a", sft.id, "cpu")).await.unwrap();
    let b = s.create_job(&queued_job("b", sft.id, "cpu")).await.unwrap();
    let c = s.create_job(&queued_job("c", sft.id, "cpu")).await.unwrap();
    let g = s.create_job(&queued_job("g", sft.id, "cuda")).await.unwrap();
    let first = s.claim_next_job("cpu").await.unwrap().unwrap();
    assert_eq!((first.id, first.status), (a.id, JobStatus::Running));
    assert!(s.claim_next_job("cpu").await.unwrap().is_none(), "one running job per device");
    assert_eq!(s.claim_next_job("cuda").await.unwrap().unwrap().id, g.id, "devices are independent");
    // A second running job on the device is refused by the database itself.
    assert!(s.start_job(b.id).await.is_err());
    assert_eq!(s.job(b.id).await.unwrap().status, JobStatus::Queued);

    let cancelled = s.request_cancel(b.id).await.unwrap();
    assert_eq!(cancelled.status, JobStatus::Cancelled, "a queued job ends at once");
    let flagged = s.request_cancel(a.id).await.unwrap();
    assert_eq!((flagged.status, flagged.cancel_requested), (JobStatus::Running, true));
    assert!(s.cancel_requested(a.id).await.unwrap());
    assert!(!s.cancel_requested(c.id).await.unwrap());
    assert!(s.request_cancel(b.id).await.is_err(), "an ended job cannot be cancelled");

    // The server dies: both running jobs go back to the queue, a cancelled one stays ended.
    assert_eq!(s.requeue_running_jobs().await.unwrap(), 2);
    assert_eq!(s.job(a.id).await.unwrap().status, JobStatus::Queued);
    assert_eq!(s.job(b.id).await.unwrap().status, JobStatus::Cancelled);
    s.request_cancel(a.id).await.unwrap();
    assert_eq!(s.claim_next_job("cpu").await.unwrap().unwrap().id, c.id);
    s.finish_job(c.id, JobStatus::Succeeded, None, None).await.unwrap();
    assert!(s.claim_next_job("cpu").await.unwrap().is_none());

    s.audit(None, "admin", "launch", "training job 3").await.unwrap();
    s.audit(None, "admin", "cancel", "training job 2").await.unwrap();
    let log = s.audit_log(10).await.unwrap();
    assert_eq!(log.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(), ["cancel", "launch"]);

    // Evaluation runs: queued, claimed, progress, requeued, cancelled.
    let e = s.queue_eval_run(sft.id, "phantom", "medpo-eval/1", &serde_json::json!({"limit": 5}), None).await.unwrap();
    assert_eq!((e.status, e.config["limit"].as_i64()), (JobStatus::Queued, Some(5)));
    let run = s.claim_next_eval().await.unwrap().unwrap();
    assert_eq!((run.id, run.status), (e.id, JobStatus::Running));
    assert!(s.claim_next_eval().await.unwrap().is_none());
    s.eval_progress(e.id, 2, 5).await.unwrap();
    assert_eq!(s.requeue_running_evals().await.unwrap(), 1);
    let again = s.claim_next_eval().await.unwrap().unwrap();
    assert_eq!((again.done_items, again.total_items), (2, 5));
    assert_eq!(s.cancel_eval_run(e.id).await.unwrap().status, JobStatus::Cancelled);
    s.finish_eval_run(e.id, JobStatus::Succeeded, &serde_json::json!({}), None).await.unwrap();
    assert_eq!(s.eval_run(e.id).await.unwrap().status, JobStatus::Cancelled, "a cancelled run stays cancelled");
    assert_eq!(s.list_eval_runs(10).await.unwrap().len(), 1);
}
both!(job_queue);

async fn eval_runs_and_leaderboard(s: &Store) {
    let sft = model(s, "sft", "sft", None).await;
    let r = s.create_eval_run(sft.id, "vqa-rad", "medpo-eval/1").await.unwrap();
    let items = vec![
        EvalItem { item_id: "1".into(), answer_type: "closed".into(), category: "presence".into(), question: "q".into(), gold: "yes".into(), prediction: "yes".into(), score: 1.0 },
        EvalItem { item_id: "2".into(), answer_type: "open".into(), category: "organ".into(), question: "q".into(), gold: "liver".into(), prediction: "kidney".into(), score: 0.0 },
    ];
    s.add_eval_items(r.id, &items).await.unwrap();
    s.add_eval_items(r.id, &items[..1]).await.unwrap();
    s.finish_eval_run(r.id, JobStatus::Succeeded, &serde_json::json!({"closed_accuracy": 1.0}), None).await.unwrap();
    let board = s.leaderboard().await.unwrap();
    assert_eq!(board.len(), 1);
    assert_eq!(board[0].n_items, 2);
    assert_eq!(board[0].model_name, "sft");
    assert_eq!(board[0].metrics["closed_accuracy"], 1.0);
    assert_eq!(s.eval_items(r.id).await.unwrap(), items);
}
both!(eval_runs_and_leaderboard);

#[tokio::test]
async fn bad_urls_are_named() {
    let e = Store::open("mysql://x", &ConnectSettings::default()).await.unwrap_err();
    assert!(e.to_string().contains("mysql"), "{e}");
    let e = Store::open("not a url", &ConnectSettings::default()).await.unwrap_err();
    assert!(e.to_string().contains("not a url"), "{e}");
    let settings = ConnectSettings { acquire_timeout: std::time::Duration::from_secs(2), ..Default::default() };
    // Nothing listens on port 1.
    let e = Store::open("postgres://u:secret@127.0.0.1:1/db", &settings).await.unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("127.0.0.1:1") && !msg.contains("secret"), "{msg}");
}
