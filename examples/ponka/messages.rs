//! The messages of the ponka app: yesterday's v1 and today's current versions.
//!
//! Shared by the example and the integration tests (`#[path]`), so both speak of the same
//! types.

use serde::{Deserialize, Serialize};
use upcaster::{Registry, RegistryError, Upcaster};

/// What yesterday's code wrote: v1 called the image post `imagePostId`.
pub mod v1 {
    use serde::{Deserialize, Serialize};

    /// Asks a worker to add Ponka to an image.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize, upcaster::Message)]
    #[serde(rename_all = "camelCase")]
    #[message(name = "AddPonkaToImage", version = 1)]
    pub struct AddPonkaToImage {
        pub image_post_id: u64,
    }
}

/// Asks a worker to add Ponka to an image. v2 renamed `imagePostId` to `imagePost`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, upcaster::Message)]
#[serde(rename_all = "camelCase")]
#[message(name = "AddPonkaToImage", version = 2)]
pub struct AddPonkaToImage {
    pub image_post: u64,
}

/// Asks a worker to delete an image post and its file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, upcaster::Message)]
#[serde(rename_all = "camelCase")]
#[message(name = "DeleteImagePost", version = 1)]
pub struct DeleteImagePost {
    pub image_post: u64,
    pub filename: String,
}

/// Announces that an image post was deleted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, upcaster::Message)]
#[serde(rename_all = "camelCase")]
#[message(name = "ImagePostDeletedEvent", version = 1)]
pub struct ImagePostDeletedEvent {
    pub filename: String,
}

/// The rename of v1 → v2, over the payload's object tree.
pub fn rename_image_post_id() -> Upcaster {
    Upcaster::new(1, 2, |payload| {
        let object = payload.as_object_mut().ok_or("payload is not an object")?;
        let id = object
            .remove("imagePostId")
            .ok_or("`imagePostId` is missing")?;
        object.insert("imagePost".to_owned(), id);
        Ok(())
    })
}

/// Today's registry: every current type, and the chain that reads v1.
pub fn registry() -> Result<Registry, RegistryError> {
    Registry::builder()
        .register::<AddPonkaToImage>()
        .upcaster::<AddPonkaToImage>(rename_image_post_id())
        .register::<DeleteImagePost>()
        .register::<ImagePostDeletedEvent>()
        .build()
}

/// Yesterday's registry, as the v1 code built it.
pub fn registry_v1() -> Result<Registry, RegistryError> {
    Registry::builder()
        .register::<v1::AddPonkaToImage>()
        .register::<DeleteImagePost>()
        .register::<ImagePostDeletedEvent>()
        .build()
}
