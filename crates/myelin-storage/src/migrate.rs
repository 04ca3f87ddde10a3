//! Schema migrations: numbered SQL files compiled into the binary, so a
//! server can never run against a schema it does not know how to read.
//!
//! Both dialects keep the same numbering: version N means the same tables in
//! SQLite and in PostgreSQL. A database that records a version newer than the
//! newest one compiled in was written by a newer Myelin, and is refused rather
//! than misread. The SQL that applies them lives in each backend; this module
//! only holds the lists and decides what is pending.

use crate::{StorageError, StorageResult};

/// One numbered schema change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

/// What opening a database did to its schema.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationReport {
    /// Migrations applied by this open, in order: `(version, name)`.
    pub applied: Vec<(i64, String)>,
    /// The schema version after the open (0 for an empty database).
    pub current_version: i64,
}

/// SQLite migrations, ascending.
pub(crate) const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        name: "accounts",
        sql: include_str!("../../../sql/sqlite/0001_accounts.sql"),
    },
    Migration {
        version: 2,
        name: "rooms",
        sql: include_str!("../../../sql/sqlite/0002_rooms.sql"),
    },
    Migration {
        version: 3,
        name: "relations",
        sql: include_str!("../../../sql/sqlite/0003_relations.sql"),
    },
    Migration {
        version: 4,
        name: "directory",
        sql: include_str!("../../../sql/sqlite/0004_directory.sql"),
    },
    Migration {
        version: 5,
        name: "search",
        sql: include_str!("../../../sql/sqlite/0005_search.sql"),
    },
    Migration {
        version: 6,
        name: "push",
        sql: include_str!("../../../sql/sqlite/0006_push.sql"),
    },
    Migration {
        version: 7,
        name: "keys",
        sql: include_str!("../../../sql/sqlite/0007_keys.sql"),
    },
    Migration {
        version: 8,
        name: "to_device",
        sql: include_str!("../../../sql/sqlite/0008_to_device.sql"),
    },
    Migration {
        version: 9,
        name: "backup",
        sql: include_str!("../../../sql/sqlite/0009_backup.sql"),
    },
    Migration {
        version: 10,
        name: "cross_signing",
        sql: include_str!("../../../sql/sqlite/0010_cross_signing.sql"),
    },
    Migration {
        version: 11,
        name: "dehydrated_devices",
        sql: include_str!("../../../sql/sqlite/0011_dehydrated_devices.sql"),
    },
    Migration {
        version: 12,
        name: "media",
        sql: include_str!("../../../sql/sqlite/0012_media.sql"),
    },
];

/// PostgreSQL migrations, ascending, numbered as [`SQLITE`].
pub(crate) const POSTGRES: &[Migration] = &[
    Migration {
        version: 1,
        name: "accounts",
        sql: include_str!("../../../sql/postgres/0001_accounts.sql"),
    },
    Migration {
        version: 2,
        name: "rooms",
        sql: include_str!("../../../sql/postgres/0002_rooms.sql"),
    },
    Migration {
        version: 3,
        name: "relations",
        sql: include_str!("../../../sql/postgres/0003_relations.sql"),
    },
    Migration {
        version: 4,
        name: "directory",
        sql: include_str!("../../../sql/postgres/0004_directory.sql"),
    },
    Migration {
        version: 5,
        name: "search",
        sql: include_str!("../../../sql/postgres/0005_search.sql"),
    },
    Migration {
        version: 6,
        name: "push",
        sql: include_str!("../../../sql/postgres/0006_push.sql"),
    },
    Migration {
        version: 7,
        name: "keys",
        sql: include_str!("../../../sql/postgres/0007_keys.sql"),
    },
    Migration {
        version: 8,
        name: "to_device",
        sql: include_str!("../../../sql/postgres/0008_to_device.sql"),
    },
    Migration {
        version: 9,
        name: "backup",
        sql: include_str!("../../../sql/postgres/0009_backup.sql"),
    },
    Migration {
        version: 10,
        name: "cross_signing",
        sql: include_str!("../../../sql/postgres/0010_cross_signing.sql"),
    },
    Migration {
        version: 11,
        name: "dehydrated_devices",
        sql: include_str!("../../../sql/postgres/0011_dehydrated_devices.sql"),
    },
    Migration {
        version: 12,
        name: "media",
        sql: include_str!("../../../sql/postgres/0012_media.sql"),
    },
];

/// The newest version in `known`.
pub(crate) fn latest(known: &[Migration]) -> i64 {
    known.last().map_or(0, |m| m.version)
}

/// The migrations of `known` not yet in `applied`, in order; refuses a
/// database recording a version newer than any in `known`.
pub(crate) fn pending<'a>(
    known: &'a [Migration],
    applied: &[i64],
) -> StorageResult<Vec<&'a Migration>> {
    let supported = latest(known);
    if let Some(&found) = applied.iter().max()
        && found > supported
    {
        return Err(StorageError::SchemaTooNew { found, supported });
    }
    Ok(known
        .iter()
        .filter(|m| !applied.contains(&m.version))
        .collect())
}

/// The error for a database that needs migrations when applying them was not
/// allowed.
pub(crate) fn pending_error(pending: &[&Migration]) -> StorageError {
    let versions: Vec<String> = pending
        .iter()
        .map(|m| format!("{:04}_{}", m.version, m.name))
        .collect();
    StorageError::Backend(format!(
        "the database schema has {} pending migrations ({}); \
         run `myelin migrate` or allow migrations at start-up",
        pending.len(),
        versions.join(", ")
    ))
}

/// Milliseconds since the Unix epoch, for `schema_migrations.applied_ms`.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_ascending_and_numbered_alike() {
        for list in [SQLITE, POSTGRES] {
            assert!(list.windows(2).all(|w| w[0].version < w[1].version));
            assert!(
                list.iter()
                    .all(|m| m.version > 0 && !m.sql.trim().is_empty())
            );
        }
        let sqlite: Vec<_> = SQLITE.iter().map(|m| (m.version, m.name)).collect();
        let postgres: Vec<_> = POSTGRES.iter().map(|m| (m.version, m.name)).collect();
        assert_eq!(sqlite, postgres);
    }

    #[test]
    fn pending_skips_applied_and_refuses_newer() {
        let known = SQLITE;
        assert_eq!(pending(known, &[]).map(|p| p.len()).ok(), Some(known.len()));
        assert_eq!(
            pending(known, &[1]).map(|p| p.len()).ok(),
            Some(known.len() - 1)
        );
        assert!(matches!(
            pending(known, &[1, 9999]),
            Err(StorageError::SchemaTooNew { found: 9999, .. })
        ));
    }
}
