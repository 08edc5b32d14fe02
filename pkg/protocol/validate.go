package protocol

// Validate methods check service requests before any handler runs; the
// natsrpc server calls them.

// CheckID refuses a field whose value is not a well-formed ID.
func CheckID(field, value string) error {
	if !ValidID(value) {
		return Errorf(CodeBadRequest, "%s is missing or not a valid ID", field)
	}
	return nil
}

func checkIDs(pairs ...string) error {
	for i := 0; i+1 < len(pairs); i += 2 {
		if err := CheckID(pairs[i], pairs[i+1]); err != nil {
			return err
		}
	}
	return nil
}

// CheckSignal refuses WebRTC signal data that is not a JSON object of at
// most MaxSignalBytes. data must be valid JSON already (a decoded
// json.RawMessage is).
func CheckSignal(data []byte) error {
	if len(data) == 0 || data[0] != '{' {
		return Errorf(CodeBadRequest, "signal data must be a JSON object")
	}
	if len(data) > MaxSignalBytes {
		return Errorf(CodeBadRequest, "signal data is larger than %d bytes", MaxSignalBytes)
	}
	return nil
}

// Validate checks the request's fields.
func (r *JoinRequest) Validate() error {
	if err := CheckRoom(r.Room); err != nil {
		return err
	}
	if err := checkIDs("user_id", r.UserID, "edge", r.Edge, "conn", r.Conn); err != nil {
		return err
	}
	if !ValidSecret(r.Secret) {
		return Errorf(CodeBadRequest, "secret is missing or not 64 hexadecimal digits")
	}
	name, err := NormalizeName(r.Name)
	r.Name = name
	return err
}

// Validate checks the request's fields.
func (r *ResumeRequest) Validate() error {
	if err := CheckRoom(r.Room); err != nil {
		return err
	}
	if err := checkIDs("edge", r.Edge, "conn", r.Conn); err != nil {
		return err
	}
	if !ValidID(r.UserID) || !ValidSecret(r.Secret) {
		return Errorf(CodeResumeFailed, "unknown user or wrong secret")
	}
	return nil
}

// Validate checks the request's fields.
func (r *DisconnectRequest) Validate() error {
	if err := CheckRoom(r.Room); err != nil {
		return err
	}
	if err := checkIDs("user_id", r.UserID, "conn", r.Conn); err != nil {
		return err
	}
	return checkProof(r.Secret)
}

// Validate checks the request's fields.
func (r *LeaveRequest) Validate() error {
	if err := CheckRoom(r.Room); err != nil {
		return err
	}
	return checkIDs("user_id", r.UserID, "conn", r.Conn)
}

// ErrNotProven answers a request that acts for a user without the user's
// secret: refused by Validate when it has none, by the service when it is
// not the user's.
var ErrNotProven = Errorf(CodeForbidden, "the request does not come from the connection that serves this user")

// checkProof refuses a secret that cannot be one.
func checkProof(secret string) error {
	if !ValidSecret(secret) {
		return ErrNotProven
	}
	return nil
}

// Validate checks the request's fields.
func (r *InviteRequest) Validate() error {
	if err := CheckRoom(r.Room); err != nil {
		return err
	}
	if err := checkIDs("from", r.From, "to", r.To); err != nil {
		return err
	}
	return checkProof(r.Secret)
}

// Validate checks the request's fields.
func (r *InvitationRequest) Validate() error {
	if err := CheckRoom(r.Room); err != nil {
		return err
	}
	if err := checkIDs("user_id", r.UserID, "invitation", r.Invitation); err != nil {
		return err
	}
	return checkProof(r.Secret)
}

// Validate checks the request's fields.
func (r *ChatRequest) Validate() error {
	if err := CheckRoom(r.Room); err != nil {
		return err
	}
	if err := checkIDs("user_id", r.UserID, "chat", r.Chat); err != nil {
		return err
	}
	return checkProof(r.Secret)
}

// Validate checks the request's fields.
func (r *SignalRequest) Validate() error {
	if err := CheckRoom(r.Room); err != nil {
		return err
	}
	if err := checkIDs("user_id", r.UserID, "chat", r.Chat); err != nil {
		return err
	}
	if err := CheckSignal(r.Data); err != nil {
		return err
	}
	return checkProof(r.Secret)
}

// Validate checks the request's fields.
func (r *SessionRequest) Validate() error {
	return checkIDs("chat_id", r.ChatID, "parties[0]", r.Parties[0], "parties[1]", r.Parties[1])
}

// Validate checks the request's fields.
func (r *AttachRequest) Validate() error {
	if err := CheckRoom(r.Room); err != nil {
		return err
	}
	if err := checkIDs("user_id", r.UserID, "edge", r.Edge, "conn", r.Conn); err != nil {
		return err
	}
	return checkProof(r.Secret)
}

// Validate checks the request's fields.
func (r *LeaseRequest) Validate() error {
	return checkProof(r.Secret)
}
