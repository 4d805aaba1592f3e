//! The messages of the ponka app: yesterday's v1 and today's current versions.
//!
//! Shared by the example and the integration tests (`#[path]`), so both speak of the same
//! types.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use upcaster::{Registry, RegistryError};

/// What yesterday's code wrote: v1 called the image post `imagePostId`.
pub mod v1 {
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};

    /// Asks a worker to add Ponka to an image.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema, upcaster::Message)]
    #[serde(rename_all = "camelCase")]
    #[message(name = "AddPonkaToImage", version = 1)]
    pub struct AddPonkaToImage {
        pub image_post_id: u64,
    }
}

/// Asks a worker to add Ponka to an image. v2 renamed `imagePostId` to `imagePost`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema, upcaster::Message)]
#[serde(rename_all = "camelCase")]
#[message(name = "AddPonkaToImage", version = 2)]
pub struct AddPonkaToImage {
    pub image_post: u64,
}

/// Asks a worker to delete an image post and its file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema, upcaster::Message)]
#[serde(rename_all = "camelCase")]
#[message(name = "DeleteImagePost", version = 1)]
pub struct DeleteImagePost {
    pub image_post: u64,
    pub filename: String,
}

/// Announces that an image post was deleted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema, upcaster::Message)]
#[serde(rename_all = "camelCase")]
#[message(name = "ImagePostDeletedEvent", version = 1)]
pub struct ImagePostDeletedEvent {
    pub filename: String,
}

/// Today's registry: every current type, and the migrations in `migrations/` that read
/// older versions (`AddPonkaToImage/v1-to-v2.json` renames `imagePostId`), compiled in.
pub fn registry() -> Result<Registry, Box<dyn std::error::Error>> {
    let migrations = upcaster::embed_migrations!("migrations")?;
    Ok(Registry::builder()
        .register::<AddPonkaToImage>()
        .register::<DeleteImagePost>()
        .register::<ImagePostDeletedEvent>()
        .migrations(migrations)
        .build()?)
}

/// Yesterday's registry, as the v1 code built it.
pub fn registry_v1() -> Result<Registry, RegistryError> {
    Registry::builder()
        .register::<v1::AddPonkaToImage>()
        .register::<DeleteImagePost>()
        .register::<ImagePostDeletedEvent>()
        .build()
}
