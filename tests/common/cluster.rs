//! A cluster of `livechat serve` nodes on one fresh database and one Redis (README.md, "Cluster").

use super::{TestDb, TestServer};

/// `n` nodes `n1`, `n2`, ... on one fresh database and one Redis, sharing the JWT secret and
/// the admin token (so `mint_token`, `create_user` and `admin_post` work against any node).
/// Node 1 owns the database; it is dropped last.
pub struct Cluster {
    nodes: Vec<TestServer>,
}

impl std::ops::Index<usize> for Cluster {
    type Output = TestServer;
    fn index(&self, i: usize) -> &TestServer {
        &self.nodes[i]
    }
}

impl std::ops::IndexMut<usize> for Cluster {
    fn index_mut(&mut self, i: usize) -> &mut TestServer {
        &mut self.nodes[i]
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Last node first: node 1 (which drops the database) goes after every other process.
        while let Some(node) = self.nodes.pop() {
            drop(node);
        }
    }
}

/// A [`Cluster`] of `n` nodes on the Redis at `redis`.
pub async fn cluster(n: usize, redis: &str) -> Cluster {
    cluster_with(n, redis, &[]).await
}

/// [`cluster`] with extra variables for every node.
pub async fn cluster_with(n: usize, redis: &str, extra: &[(&str, &str)]) -> Cluster {
    assert!(n >= 1);
    let db = TestDb::create().await;
    let mut env = vec![("REDIS_URL", redis), ("LIVECHAT_NODE_ID", "n1")];
    env.extend_from_slice(extra);
    let first = TestServer::start_with_db(db, &env).await;
    let (db_url, secret, admin) = (first.db_url.clone(), first.jwt_secret.clone(), first.admin_token.clone());
    let mut nodes = vec![first];
    for i in 2..=n {
        let id = format!("n{i}");
        let mut env = vec![
            ("REDIS_URL", redis),
            ("LIVECHAT_NODE_ID", id.as_str()),
            ("LIVECHAT_JWT_SECRET", secret.as_str()),
            ("LIVECHAT_ADMIN_TOKEN", admin.as_str()),
        ];
        env.extend_from_slice(extra);
        let mut node = TestServer::start_with_url(&db_url, &env).await;
        node.jwt_secret = secret.clone();
        node.admin_token = admin.clone();
        nodes.push(node);
    }
    Cluster { nodes }
}
