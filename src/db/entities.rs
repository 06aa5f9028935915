//! sea-orm entities: one module per table of the database of record (see migrations/).
#![allow(missing_docs)]

pub mod dag {
    #[allow(unused_imports)]
    use crate::db::state::*;
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "dag")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub dag_id: String,
        pub fileloc: String,
        pub source_hash: String,
        pub is_paused: bool,
        pub is_active: bool,
        pub description: Option<String>,
        pub schedule: Option<String>,
        pub timezone: String,
        pub owner: Option<String>,
        pub tags: String,
        pub latest_version_id: Option<i64>,
        pub last_parsed_at: DateTimeUtc,
        pub next_run_after: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod dag_version {
    #[allow(unused_imports)]
    use crate::db::state::*;
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "dag_version")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub dag_id: String,
        pub version: i32,
        pub source_hash: String,
        pub source: String,
        pub fileloc: String,
        pub created_at: DateTimeUtc,
        /// The rest of the bundle (files the definition reads), JSON; '' on versions
        /// recorded before bundles were stored.
        pub files: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod dag_run {
    #[allow(unused_imports)]
    use crate::db::state::*;
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "dag_run")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub dag_id: String,
        pub run_id: String,
        pub run_type: RunType,
        pub state: RunState,
        pub logical_date: DateTimeUtc,
        pub data_interval_start: DateTimeUtc,
        pub data_interval_end: DateTimeUtc,
        pub dag_version_id: i64,
        pub params: String,
        pub conf: String,
        pub created_at: DateTimeUtc,
        pub started_at: Option<DateTimeUtc>,
        pub ended_at: Option<DateTimeUtc>,
        pub note: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod task_instance {
    #[allow(unused_imports)]
    use crate::db::state::*;
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "task_instance")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub dag_run_id: i64,
        pub dag_id: String,
        pub task_id: String,
        pub kind: String,
        pub state: TaskState,
        pub try_number: i32,
        pub max_tries: i32,
        pub pool: String,
        pub pool_slots: i32,
        pub priority: i32,
        pub scheduled_at: Option<DateTimeUtc>,
        pub queued_at: Option<DateTimeUtc>,
        pub started_at: Option<DateTimeUtc>,
        pub ended_at: Option<DateTimeUtc>,
        pub duration_ms: Option<i64>,
        pub hostname: Option<String>,
        pub worker_id: Option<String>,
        pub pid: Option<i32>,
        pub heartbeat_at: Option<DateTimeUtc>,
        pub exit_code: Option<i32>,
        pub next_retry_at: Option<DateTimeUtc>,
        pub error: Option<String>,
        pub updated_at: DateTimeUtc,
        pub queue: String,
        pub note: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod task_try {
    #[allow(unused_imports)]
    use crate::db::state::*;
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "task_try")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub task_instance_id: i64,
        pub dag_run_id: i64,
        pub dag_id: String,
        pub task_id: String,
        pub try_number: i32,
        pub state: TryState,
        pub started_at: DateTimeUtc,
        pub ended_at: Option<DateTimeUtc>,
        pub duration_ms: Option<i64>,
        pub exit_code: Option<i32>,
        pub error: Option<String>,
        pub hostname: String,
        pub worker_id: String,
        pub pid: Option<i32>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod task_log {
    #[allow(unused_imports)]
    use crate::db::state::*;
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "task_log")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub task_try_id: i64,
        pub seq: i32,
        pub content: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod pool {
    #[allow(unused_imports)]
    use crate::db::state::*;
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "pool")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub name: String,
        pub slots: i32,
        pub description: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod user {
    #[allow(unused_imports)]
    use crate::db::state::*;
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "weft_user")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        #[sea_orm(unique)]
        pub username: String,
        pub password_hash: String,
        pub role: Role,
        pub api_token_hash: Option<String>,
        pub created_at: DateTimeUtc,
        pub last_login_at: Option<DateTimeUtc>,
        pub disabled: bool,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod import_error {
    #[allow(unused_imports)]
    use crate::db::state::*;
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "import_error")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        #[sea_orm(unique)]
        pub fileloc: String,
        pub message: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod worker {
    #[allow(unused_imports)]
    use crate::db::state::*;
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "worker")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub hostname: String,
        pub pid: i32,
        pub started_at: DateTimeUtc,
        pub heartbeat_at: DateTimeUtc,
        pub stopped_at: Option<DateTimeUtc>,
        pub role: String,
        pub queues: String,
        pub capacity: i32,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod lease {
    #[allow(unused_imports)]
    use crate::db::state::*;
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "lease")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub name: String,
        pub holder: String,
        pub expires_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod setting {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "setting")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub key: String,
        pub value: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod web_session {
    use sea_orm::entity::prelude::*;

    /// A login: the cookie holds a random id, the table its sha256.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "web_session")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id_hash: String,
        pub user_id: i64,
        pub created_at: DateTimeUtc,
        pub expires_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod api_token {
    use sea_orm::entity::prelude::*;

    /// A named API token of a user, stored as its sha256, with a scope and an expiry.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "api_token")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub user_id: i64,
        pub name: String,
        #[sea_orm(unique)]
        pub token_hash: String,
        /// `read` or `operate`.
        pub scope: String,
        pub created_at: DateTimeUtc,
        pub expires_at: Option<DateTimeUtc>,
        pub last_used_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod audit_log {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_log")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub at: DateTimeUtc,
        pub actor: String,
        pub source: String,
        pub client: Option<String>,
        pub action: String,
        pub dag_id: Option<String>,
        pub run_id: Option<String>,
        pub task_id: Option<String>,
        pub detail: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
