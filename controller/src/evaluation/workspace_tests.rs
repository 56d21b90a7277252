use std::collections::BTreeMap;

use super::*;
use crate::crd::Evaluation;
use crate::evaluation::Context;
use crate::fixtures::status_error;
use crate::run::workspace::tests::{case, workspace_of};
use http::Method;
fn path_of(cm: &ConfigMap) -> String {
    format!("/api/v1/namespaces/team-a/configmaps/{}", cm.name_any())
}

const CONFIGMAPS: &str = "/api/v1/namespaces/team-a/configmaps";

#[tokio::test]
async fn a_shared_workspace_that_exists_is_checked_and_used_without_a_write() {
    let (ctx, mut api) = Context::test();
    let ws = workspace_of(&case("a", "uid-a", &[("eval.py", "print(1)")]));
    let (cm, path) = (ws.config_map.clone(), path_of(&ws.config_map));
    let server = tokio::spawn(async move {
        let stored = serde_json::to_value(&cm).expect("json");
        api.expect(Method::GET, &path, 200, stored).await;
        api.expect_silence().await;
    });
    let maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), "team-a");
    ensure(&maps, &ws.config_map, ws.shared)
        .await
        .expect("ensure");
    server.await.expect("scenario");
}

#[tokio::test]
async fn a_missing_shared_workspace_is_created() {
    let (ctx, mut api) = Context::test();
    let ws = workspace_of(&case("a", "uid-a", &[("eval.py", "print(1)")]));
    let path = path_of(&ws.config_map);
    let server = tokio::spawn(async move {
        api.expect(Method::GET, &path, 404, status_error(404, "not found"))
            .await;
        let create = api
            .expect(Method::POST, CONFIGMAPS, 201, serde_json::json!({}))
            .await;
        assert_eq!(create.body["immutable"], true);
        assert_eq!(create.body["data"]["eval.py"], "print(1)");
        api.expect_silence().await;
    });
    let maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), "team-a");
    ensure(&maps, &ws.config_map, ws.shared)
        .await
        .expect("ensure");
    server.await.expect("scenario");
}

#[tokio::test]
async fn an_edited_workspace_is_deleted_and_created_again() {
    let (ctx, mut api) = Context::test();
    let ws = workspace_of(&Evaluation::test());
    let path = path_of(&ws.config_map);
    let mut edited = ws.config_map.clone();
    edited.data = Some(BTreeMap::from([(
        "eval.py".to_string(),
        "print(666)".to_string(),
    )]));
    edited.metadata.uid = Some("old-uid".into());
    edited.metadata.resource_version = Some("7".into());
    let server = tokio::spawn(async move {
        // Standalone: created first; it exists.
        api.expect(Method::POST, CONFIGMAPS, 409, status_error(409, "exists"))
            .await;
        let stored = serde_json::to_value(&edited).expect("json");
        api.expect(Method::GET, &path, 200, stored).await;
        let delete = api
            .expect(Method::DELETE, &path, 200, serde_json::json!({}))
            .await;
        assert_eq!(delete.body["preconditions"]["uid"], "old-uid");
        assert_eq!(delete.body["preconditions"]["resourceVersion"], "7");
        let create = api
            .expect(Method::POST, CONFIGMAPS, 201, serde_json::json!({}))
            .await;
        assert_eq!(create.body["data"]["eval.py"], "print(1)");
        api.expect_silence().await;
    });
    let maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), "team-a");
    ensure(&maps, &ws.config_map, ws.shared)
        .await
        .expect("ensure");
    server.await.expect("scenario");
}
