//! Contacts through the API on the embedded backend: identities owned by one contact, paging,
//! look-up by identity, changes, merges, tenant isolation and bad input.

use herald_tests::TestServer;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn create(s: &TestServer, body: Value) -> Value {
    let r = s.post("/v1/contacts", &body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.body
}

async fn patch(s: &TestServer, path: &str, body: Value) -> (StatusCode, Value) {
    let headers = [("content-type", "application/json")];
    let r = s
        .request(
            Method::PATCH,
            path,
            Some(&s.key),
            &headers,
            Some(body.to_string().into_bytes()),
        )
        .await;
    (r.status, r.body)
}

fn id(v: &Value) -> String {
    v["id"].as_str().expect("an id").to_owned()
}

#[tokio::test]
async fn a_contact_owns_its_identities_and_merges_into_another() {
    let s = TestServer::start().await;
    let ann = create(
        &s,
        json!({"name": "Ann", "metadata": {"plan": "gold"},
               "identities": [{"kind": "phone", "value": "+1 (415) 555-0100"},
                              {"kind": "email", "value": "Ann@Example.com"}]}),
    )
    .await;
    assert_eq!(
        ann["identities"][0],
        json!({"kind": "phone", "value": "+14155550100"})
    );

    // The same mailbox in another case is Ann's already.
    let r = s
        .post(
            "/v1/contacts",
            &json!({"identities": [{"kind": "email", "value": "ann@example.com"}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert!(
        r.body["detail"].as_str().unwrap_or("").contains(&id(&ann)),
        "{}",
        r.body
    );

    let found = s.get("/v1/contacts?identity=phone:%2B14155550100").await;
    assert_eq!(found.body["items"][0]["id"], ann["id"], "{}", found.body);
    let none = s.get("/v1/contacts?identity=phone:%2B14155550199").await;
    assert_eq!(none.body["items"], json!([]));

    let bo = create(
        &s,
        json!({"name": "Bo", "identities": [{"kind": "telegram", "value": "@bo_the_dog"}]}),
    )
    .await;
    let added = s
        .post(
            &format!("/v1/contacts/{}/identities", id(&bo)),
            &json!({"kind": "whatsapp", "value": "+14155550100"}),
        )
        .await;
    assert_eq!(added.status, StatusCode::OK, "{}", added.body);
    assert_eq!(added.body["identities"].as_array().map(Vec::len), Some(2));

    // Pages, oldest first.
    let first = s.get("/v1/contacts?limit=1").await;
    assert_eq!(first.body["items"][0]["id"], ann["id"]);
    let after = first.body["next_after"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let second = s.get(&format!("/v1/contacts?limit=1&after={after}")).await;
    assert_eq!(second.body["items"][0]["id"], bo["id"]);

    let (status, changed) = patch(
        &s,
        &format!("/v1/contacts/{}", id(&ann)),
        json!({"name": null, "external_id": "crm-1"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["name"], Value::Null);
    assert_eq!(changed["external_id"], "crm-1");
    assert_eq!(changed["metadata"]["plan"], "gold", "untouched");

    let merged = s
        .post(
            &format!("/v1/contacts/{}/merge", id(&ann)),
            &json!({"contact_id": id(&bo)}),
        )
        .await;
    assert_eq!(merged.status, StatusCode::OK, "{}", merged.body);
    assert_eq!(merged.body["identities"].as_array().map(Vec::len), Some(4));
    let gone = s.get(&format!("/v1/contacts/{}", id(&bo))).await;
    assert_eq!(gone.body["merged_into"], ann["id"]);
    let audit = s.get("/v1/audit?action=contact.merged").await;
    assert_eq!(
        audit.body["items"][0]["target"], ann["id"],
        "{}",
        audit.body
    );
    assert_eq!(audit.body["items"][0]["detail"]["merged"], bo["id"]);
    let owner = s.get("/v1/contacts?identity=telegram:@bo_the_dog").await;
    assert_eq!(owner.body["items"][0]["id"], ann["id"]);
    let all = s.get("/v1/contacts").await;
    assert_eq!(
        all.body["items"].as_array().map(Vec::len),
        Some(1),
        "{}",
        all.body
    );
    let again = s
        .post(
            &format!("/v1/contacts/{}/merge", id(&ann)),
            &json!({"contact_id": id(&bo)}),
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    let (status, _) = patch(
        &s,
        &format!("/v1/contacts/{}", id(&bo)),
        json!({"name": "x"}),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a merged contact does not change"
    );
}

#[tokio::test]
async fn another_tenants_contacts_are_not_found() {
    let s = TestServer::start().await;
    let ann = create(
        &s,
        json!({"identities": [{"kind": "phone", "value": "+14155550100"}]}),
    )
    .await;
    let other = s.new_key("globex").await;
    let path = format!("/v1/contacts/{}", id(&ann));
    assert_eq!(s.get_as(&path, &other).await.status, StatusCode::NOT_FOUND);
    let listed = s
        .get_as("/v1/contacts?identity=phone:%2B14155550100", &other)
        .await;
    assert_eq!(listed.body["items"], json!([]));
    let theirs = s
        .post_with(
            "/v1/contacts",
            &other,
            &[],
            &json!({"identities": [{"kind": "phone", "value": "+14155550100"}]}),
        )
        .await;
    assert_eq!(
        theirs.status,
        StatusCode::CREATED,
        "each tenant has its own people"
    );
    for (path, body) in [
        (
            format!("{path}/identities"),
            json!({"kind": "email", "value": "x@example.com"}),
        ),
        (
            format!("{path}/merge"),
            json!({"contact_id": id(&theirs.body)}),
        ),
    ] {
        let r = s.post_with(&path, &other, &[], &body).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}: {}", r.body);
    }
    // Merging another tenant's contact into one's own finds nothing to merge.
    let r = s
        .post(
            &format!("{path}/merge"),
            &json!({"contact_id": id(&theirs.body)}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    let anonymous = s
        .request(Method::GET, "/v1/contacts", None, &[], None)
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn bad_contacts_are_refused_with_a_problem() {
    let s = TestServer::start().await;
    let big = "x".repeat(5000);
    let too_many: Vec<Value> = (0..21)
        .map(|i| json!({"kind": "email", "value": format!("p{i}@example.com")}))
        .collect();
    for (body, pointer) in [
        (
            json!({"identities": [{"kind": "fax", "value": "1"}]}),
            "/identities/0/kind",
        ),
        (
            json!({"identities": [{"kind": "phone", "value": "555"}]}),
            "/identities/0/value",
        ),
        (json!({"name": "n".repeat(201)}), "/name"),
        (json!({"external_id": "a\u{7}b"}), "/external_id"),
        (json!({"metadata": {"k": big}}), "/metadata"),
        (json!({"identities": too_many}), "/identities"),
    ] {
        let r = s.post("/v1/contacts", &body).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            r.body
        );
        assert_eq!(r.headers["content-type"], "application/problem+json");
        assert_eq!(r.body["errors"][0]["pointer"], pointer, "{}", r.body);
    }
    let r = s.post("/v1/contacts", &json!({"nickname": "x"})).await;
    assert!(r.status.is_client_error(), "unknown field: {}", r.status);
    assert_eq!(
        s.get("/v1/contacts/not-an-id").await.status,
        StatusCode::NOT_FOUND
    );
    let r = s.get("/v1/contacts?identity=nonsense").await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    let r = s.get("/v1/contacts?after=zzz").await;
    assert!(r.status.is_client_error());
}
