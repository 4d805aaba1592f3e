use serde::{Deserialize, Serialize};
use upcaster::Message;

mod v1 {
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, upcaster::Message)]
    #[message(name = "AddPonkaToImage", version = 1)]
    pub struct AddPonkaToImage {
        pub image_id: u64,
    }
}

#[derive(Serialize, Deserialize, Message)]
#[message(name = "AddPonkaToImage", version = 2, previous = v1::AddPonkaToImage)]
struct AddPonkaToImageV2 {
    image_post: u64,
}

impl From<v1::AddPonkaToImage> for AddPonkaToImageV2 {
    fn from(v1: v1::AddPonkaToImage) -> Self {
        AddPonkaToImageV2 {
            image_post: v1.image_id,
        }
    }
}

#[derive(Serialize, Deserialize, Message)]
#[message(name = "AddPonkaToImage", version = 3, aliases = ["AddPonka"])]
#[message(previous = AddPonkaToImageV2)]
struct AddPonkaToImage {
    image_post: u32,
}

impl TryFrom<AddPonkaToImageV2> for AddPonkaToImage {
    type Error = String;

    fn try_from(v2: AddPonkaToImageV2) -> Result<Self, String> {
        let image_post = u32::try_from(v2.image_post)
            .map_err(|_| format!("image post {} does not fit in a u32", v2.image_post))?;
        Ok(AddPonkaToImage { image_post })
    }
}

// Constants with the names of the generated parameters do not clash with them.
#[allow(non_upper_case_globals, dead_code)]
const version: u32 = 7;
#[allow(non_upper_case_globals, dead_code)]
const input: u8 = 0;
#[allow(non_upper_case_globals, dead_code)]
const out: u8 = 0;

fn main() {
    let mut versions = Vec::new();
    upcaster::__private::typed_versions::<AddPonkaToImage>(&mut versions);
    let found: Vec<(&str, u32)> = versions.iter().map(|(n, v, _)| (*n, *v)).collect();
    assert_eq!(
        found,
        [
            ("AddPonkaToImage", 1),
            ("AddPonkaToImage", 2),
            ("AddPonkaToImage", 3),
        ]
    );
    assert_eq!(AddPonkaToImage::ALIASES, &["AddPonka"]);
}
